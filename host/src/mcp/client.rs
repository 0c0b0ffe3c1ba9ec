//! The MCP server's Postgres client: a session of the gateway opened inside the process
//! ([`crate::proxy::LocalDoor`]), logged in with the caller's own token, speaking the extended
//! protocol with every value in text. It is a client like psql: the gateway's login, policy,
//! masking, approvals and audit see nothing else.

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::IsNull;
use postgres_protocol::message::backend::{ErrorResponseBody, Message, NoticeResponseBody};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::proxy::LocalDoor;

/// The door label sessions of the MCP server carry in the audit log.
pub const VIA: &str = "mcp";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The gateway refused the login or ended the session (an expired or revoked token, a
    /// shutdown): its own words.
    #[error("{message} (SQLSTATE {code})")]
    Ended { code: String, message: String },
    #[error("the gateway is shutting down")]
    NotAccepting,
    #[error("the session ended")]
    Closed,
    #[error("the call was cancelled before its statement was sent")]
    Cancelled,
    #[error("{0}")]
    TransactionLost(String),
    /// The statement cannot be sent as it is (nothing was sent; the session is as it was).
    #[error("{0}")]
    Unsendable(String),
    #[error("the gateway answered out of protocol: {0}")]
    Protocol(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// An error or notice as Postgres (or the gateway) put it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub severity: String,
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Report {
    fn from_fields(mut fields: postgres_protocol::message::backend::ErrorFields<'_>) -> Self {
        let mut report = Report {
            severity: String::new(),
            code: String::new(),
            message: String::new(),
            detail: None,
            hint: None,
        };
        while let Ok(Some(field)) = fields.next() {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'V' => report.severity = value,
                b'S' if report.severity.is_empty() => report.severity = value,
                b'C' => report.code = value,
                b'M' => report.message = value,
                b'D' => report.detail = Some(value),
                b'H' => report.hint = Some(value),
                _ => {}
            }
        }
        report
    }

    fn error(body: &ErrorResponseBody) -> Self {
        Self::from_fields(body.fields())
    }

    fn notice(body: &NoticeResponseBody) -> Self {
        Self::from_fields(body.fields())
    }

    /// Bytes it holds.
    fn size(&self) -> usize {
        self.message.len()
            + self.detail.as_ref().map_or(0, String::len)
            + self.hint.as_ref().map_or(0, String::len)
            + self.code.len()
            + self.severity.len()
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
}

/// How much of an answer a call keeps: the rest is read and dropped, and the answer says
/// `truncated`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub rows: usize,
    /// Bytes of values and notices together; also the largest single message read at all.
    pub bytes: usize,
}

/// Notices one answer keeps (a `RAISE NOTICE` loop sends as many as it likes).
const MAX_NOTICES: usize = 32;

/// What one statement came to.
#[derive(Debug, Default)]
pub struct Answer {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Option<String>>>,
    /// More rows than asked for were there.
    pub truncated: bool,
    /// CommandComplete's tag (`INSERT 0 1`).
    pub command: Option<String>,
    pub error: Option<Report>,
    pub notices: Vec<Report>,
    /// Notices past [`MAX_NOTICES`] or the byte budget, not kept.
    pub notices_dropped: usize,
    /// Bytes of values and notices kept.
    pub bytes: usize,
    /// The transaction status after it: `I` idle, `T` in a block, `E` in a failed block.
    pub status: u8,
}

/// A message from the gateway, or one too large to keep, read and dropped (its tag).
enum Incoming {
    Message(Message),
    Oversize(u8),
}

/// A logged-in session.
pub struct Session {
    stream: DuplexStream,
    incoming: BytesMut,
    key: (i32, i32),
    /// Messages longer than this are read past, never held.
    max_message: usize,
    /// The transaction status of the last ReadyForQuery.
    status: u8,
    /// For cancelling a COPY TO's output, which no tool returns.
    door: LocalDoor,
}

/// What a cell costs in an answer beyond its bytes: its column name again in the row's JSON
/// object, quotes and separators.
const CELL_OVERHEAD: usize = 16;

impl Session {
    /// Opens a session through `door` and logs in as `user` to `database` with `token`.
    pub async fn open(
        door: &LocalDoor,
        client_addr: String,
        user: &str,
        database: &str,
        token: &str,
        max_message: usize,
    ) -> Result<Session, ClientError> {
        let stream = door
            .connect(VIA, client_addr)
            .ok_or(ClientError::NotAccepting)?;
        let mut session = Session {
            stream,
            incoming: BytesMut::new(),
            key: (0, 0),
            max_message,
            status: b'I',
            door: door.clone(),
        };
        let mut out = BytesMut::new();
        frontend::startup_message(
            [
                ("user", user),
                ("database", database),
                ("application_name", "sluice-mcp"),
                ("client_encoding", "UTF8"),
            ],
            &mut out,
        )?;
        session.send(&mut out).await?;
        loop {
            let Incoming::Message(message) = session.next().await? else {
                return Err(ClientError::Protocol("oversized message at login".into()));
            };
            match message {
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(token.as_bytes(), &mut out)?;
                    session.send(&mut out).await?;
                }
                Message::AuthenticationOk | Message::ParameterStatus(_) => {}
                Message::NoticeResponse(_) => {}
                Message::BackendKeyData(key) => {
                    session.key = (key.process_id(), key.secret_key());
                }
                Message::ReadyForQuery(_) => return Ok(session),
                Message::ErrorResponse(body) => {
                    let report = Report::error(&body);
                    return Err(ClientError::Ended {
                        code: report.code,
                        message: report.message,
                    });
                }
                _ => return Err(ClientError::Protocol("unexpected message at login".into())),
            }
        }
    }

    /// Runs one statement with `params` (text, `None` for NULL), keeping what `limits`
    /// allow. `notice` sees each notice as it arrives (a held statement's approval id comes
    /// this way while it waits).
    pub async fn run(
        &mut self,
        sql: &str,
        params: &[Option<String>],
        limits: Limits,
        mut notice: impl FnMut(&Report),
    ) -> Result<Answer, ClientError> {
        // What the protocol cannot carry is refused before anything is sent, leaving the
        // session (and its transaction) as it was.
        if sql.contains('\0') || params.iter().flatten().any(|p| p.contains('\0')) {
            return Err(ClientError::Unsendable(
                "SQL text and parameters cannot contain a NUL character".into(),
            ));
        }
        if params.len() > usize::from(u16::MAX) {
            return Err(ClientError::Unsendable(format!(
                "at most {} parameters",
                u16::MAX
            )));
        }
        let mut out = BytesMut::new();
        frontend::parse("", sql, std::iter::empty(), &mut out)?;
        frontend::bind(
            "",
            "",
            std::iter::empty(),
            params.iter(),
            |value, buf| match value {
                Some(text) => {
                    buf.extend_from_slice(text.as_bytes());
                    Ok(IsNull::No)
                }
                None => Ok(IsNull::Yes),
            },
            std::iter::empty(),
            &mut out,
        )
        .map_err(|e| match e {
            frontend::BindError::Conversion(e) => ClientError::Protocol(e.to_string()),
            frontend::BindError::Serialization(e) => ClientError::Io(e),
        })?;
        frontend::describe(b'P', "", &mut out)?;
        // One more than asked for tells whether there were more.
        let limit = i32::try_from(limits.rows.saturating_add(1)).unwrap_or(i32::MAX);
        frontend::execute("", limit, &mut out)?;
        frontend::sync(&mut out);
        self.send(&mut out).await?;

        let mut answer = Answer::default();
        let mut copy_out = false;
        // Once a row is dropped, later ones are too: a cut answer is a prefix of the result.
        let mut cut = false;
        // What each row costs beyond its bytes, known once the columns are.
        let mut row_overhead = 0;
        loop {
            let message = match self.next().await? {
                Incoming::Message(message) => message,
                Incoming::Oversize(b'D') => {
                    answer.truncated = true;
                    cut = true;
                    continue;
                }
                Incoming::Oversize(b'N') => {
                    answer.notices_dropped += 1;
                    continue;
                }
                Incoming::Oversize(tag) => {
                    return Err(ClientError::Protocol(format!(
                        "a {:?} message larger than {} bytes",
                        tag as char, self.max_message
                    )));
                }
            };
            match message {
                Message::RowDescription(body) => {
                    let mut fields = body.fields();
                    while let Some(field) = fields.next()? {
                        answer.columns.push(Column {
                            name: field.name().to_owned(),
                            type_oid: field.type_oid(),
                        });
                    }
                    row_overhead = answer
                        .columns
                        .iter()
                        .map(|c| c.name.len() + CELL_OVERHEAD)
                        .sum();
                }
                Message::DataRow(body) => {
                    let size = body.buffer().len() + row_overhead;
                    if cut || answer.rows.len() == limits.rows || answer.bytes + size > limits.bytes
                    {
                        answer.truncated = true;
                        cut = true;
                        continue;
                    }
                    answer.bytes += size;
                    let buffer = body.buffer();
                    let mut row = Vec::with_capacity(answer.columns.len());
                    let mut ranges = body.ranges();
                    while let Some(range) = ranges.next()? {
                        row.push(range.map(|r| String::from_utf8_lossy(&buffer[r]).into_owned()));
                    }
                    answer.rows.push(row);
                }
                Message::PortalSuspended => answer.truncated = true,
                Message::CommandComplete(body) => answer.command = Some(body.tag()?.to_owned()),
                Message::ErrorResponse(body) => answer.error = Some(Report::error(&body)),
                Message::NoticeResponse(body) => {
                    let report = Report::notice(&body);
                    let size = report.size();
                    if answer.notices.len() == MAX_NOTICES || answer.bytes + size > limits.bytes {
                        answer.notices_dropped += 1;
                    } else {
                        notice(&report);
                        answer.bytes += size;
                        answer.notices.push(report);
                    }
                }
                Message::ReadyForQuery(body) => {
                    answer.status = body.status();
                    self.status = answer.status;
                    if copy_out {
                        answer.error = Some(Report {
                            severity: "ERROR".into(),
                            code: crate::wire::sqlstate::FEATURE_NOT_SUPPORTED.into(),
                            message: "COPY output is not returned by MCP tools: use SELECT".into(),
                            detail: None,
                            hint: None,
                        });
                    }
                    return Ok(answer);
                }
                Message::ParseComplete
                | Message::BindComplete
                | Message::NoData
                | Message::EmptyQueryResponse
                | Message::ParameterStatus(_)
                | Message::NotificationResponse(_) => {}
                Message::CopyInResponse(_) => {
                    // COPY FROM STDIN needs a stream the tool does not have: end it as libpq
                    // does when its source fails. Postgres ignored the Sync sent with the
                    // statement (copy-in mode ignores Sync), so another ends the cycle.
                    frontend::copy_fail(
                        "COPY FROM STDIN is not available through MCP tools",
                        &mut out,
                    )?;
                    frontend::sync(&mut out);
                    self.send(&mut out).await?;
                }
                // No tool returns a COPY's output: it is cancelled at once (what arrives
                // meanwhile is read and dropped) and the answer says why.
                Message::CopyOutResponse(_) => {
                    copy_out = true;
                    // Waited for: a cancel still on its way when this call returns could hit
                    // the next call's statement.
                    if let Err(e) = cancel(self.door.clone(), self.key).await {
                        tracing::warn!(error = %e, "cancelling a COPY TO through MCP failed");
                    }
                }
                Message::CopyData(_) | Message::CopyDone => {}
                _ => return Err(ClientError::Protocol("unexpected message".into())),
            }
        }
    }

    /// Whether the session is in a transaction block (open or failed).
    pub fn in_transaction(&self) -> bool {
        matches!(self.status, b'T' | b'E')
    }

    /// The session's cancel key: a CancelRequest with it, through another local connection,
    /// cancels the running statement or withdraws a held one.
    pub fn cancel_key(&self) -> (i32, i32) {
        self.key
    }

    async fn send(&mut self, out: &mut BytesMut) -> Result<(), ClientError> {
        self.stream.write_all(out).await?;
        out.clear();
        Ok(())
    }

    /// The next message; a FATAL error ends the session with the gateway's reason. A message
    /// longer than `max_message` is read past without being held.
    async fn next(&mut self) -> Result<Incoming, ClientError> {
        loop {
            if self.incoming.len() >= 5 {
                let length = u32::from_be_bytes(self.incoming[1..5].try_into().expect("4 bytes"));
                let total = length as usize + 1;
                if total > self.max_message {
                    let tag = self.incoming[0];
                    self.skip(total).await?;
                    return Ok(Incoming::Oversize(tag));
                }
            }
            if let Some(message) = Message::parse(&mut self.incoming)? {
                if let Message::ErrorResponse(body) = &message {
                    let report = Report::error(body);
                    if report.severity == "FATAL" || report.severity == "PANIC" {
                        return Err(ClientError::Ended {
                            code: report.code,
                            message: report.message,
                        });
                    }
                }
                return Ok(Incoming::Message(message));
            }
            self.fill().await?;
        }
    }

    /// Reads and drops the next `left` bytes.
    async fn skip(&mut self, mut left: usize) -> Result<(), ClientError> {
        loop {
            let n = left.min(self.incoming.len());
            let _ = self.incoming.split_to(n);
            left -= n;
            if left == 0 {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<(), ClientError> {
        self.incoming.reserve(8192);
        if self.stream.read_buf(&mut self.incoming).await? == 0 {
            return Err(ClientError::Closed);
        }
        Ok(())
    }
}

/// Sends a CancelRequest for `key` through a new local connection.
pub async fn cancel(door: LocalDoor, key: (i32, i32)) -> Result<(), ClientError> {
    let mut stream = door
        .connect(VIA, "mcp-cancel".into())
        .ok_or(ClientError::NotAccepting)?;
    let mut out = BytesMut::new();
    frontend::cancel_request(key.0, key.1, &mut out);
    stream.write_all(&out).await?;
    // The gateway closes the connection once it has passed the request on.
    let mut sink = [0u8; 16];
    while stream.read(&mut sink).await? > 0 {}
    Ok(())
}
