//! From a fresh TCP connection to an authenticated session with an upstream behind it: TLS
//! negotiation, the startup packet, the token check and the upstream login.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
mod client_stream;
mod external;
pub(super) mod startup;
pub(super) mod startup_params;

use super::cancel::CancelKey;
use super::limits::SubjectSlot;
use super::shared::Shared;
use crate::audit::Event;
use crate::config::ClientTlsMode;
use crate::identity::Grant;
use crate::upstream::UpstreamSession;
use crate::wire::backend as messages;
use crate::wire::frame::FrameReader;
use crate::wire::sqlstate;
pub use client_stream::ClientStream;
use external::External;
use startup::{InitialRequest, StartupError, read_initial};
use startup_params::ClientStartup;

/// First byte of a TLS handshake record: a client using direct TLS (Postgres 17's
/// `sslnegotiation=direct`) starts with it instead of an SSLRequest.
const TLS_HANDSHAKE: u8 = 0x16;

/// Largest message accepted before the client is authenticated (Postgres' own
/// PG_MAX_AUTH_TOKEN_LENGTH): an unauthenticated peer must not make the gateway buffer much.
const MAX_AUTH_MESSAGE: usize = 65535;

/// A client that is logged in, with its upstream session.
pub struct Established {
    pub client: FrameReader<ClientStream>,
    pub grant: Grant,
    /// The client's own `application_name`, if it sent one.
    pub application_name: Option<String>,
    pub upstream: UpstreamSession,
    pub cancel_key: CancelKey,
    /// The subject's share of `max_connections_per_subject`, held for the session's life.
    pub subject_slot: SubjectSlot,
}

/// How the login phase ended when it did not produce a session.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("cancel request handled")]
    CancelHandled,
    #[error("client refused: {0}")]
    Refused(String),
    #[error("client broke the startup protocol: {0}")]
    Startup(#[from] StartupError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] crate::wire::frame::FrameError),
}

/// TLS negotiation and the first packets, up to the StartupMessage.
async fn negotiate(
    shared: &Shared,
    mut stream: ClientStream,
) -> Result<(ClientStream, u16, u16, Vec<(String, String)>), LoginError> {
    if let ClientStream::Tcp(tcp) = &stream {
        let mut first = [0u8; 1];
        if tcp.peek(&mut first).await? == 1 && first[0] == TLS_HANDSHAKE {
            stream = upgrade(shared, stream).await?;
        }
    }
    loop {
        match read_initial(&mut stream).await? {
            InitialRequest::Ssl if matches!(stream, ClientStream::Tcp(_)) => {
                stream.write_all(b"S").await?;
                stream = upgrade(shared, stream).await?;
            }
            InitialRequest::GssEnc if matches!(stream, ClientStream::Tcp(_)) => {
                stream.write_all(b"N").await?;
            }
            InitialRequest::Ssl | InitialRequest::GssEnc => {
                return Err(StartupError::Malformed("encryption requested twice").into());
            }
            InitialRequest::Cancel { pid, secret } => {
                shared.cancels.cancel(pid, secret).await;
                return Err(LoginError::CancelHandled);
            }
            InitialRequest::Startup {
                major,
                minor,
                params,
            } => return Ok((stream, major, minor, params)),
        }
    }
}

/// `over_capacity`: the gateway holds more connections than `max_connections`; the client is
/// told so once it has said who it is (as Postgres does), before any token is read.
pub async fn login(
    shared: &Shared,
    stream: ClientStream,
    peer: &str,
    via: Option<&'static str>,
    over_capacity: bool,
) -> Result<Established, LoginError> {
    let deadline = tokio::time::Instant::now() + shared.config.server.login_timeout;
    // Until the startup packet there is nobody to tell: a client that stalls is dropped
    // silently, as Postgres does.
    let (stream, major, minor, params) =
        match tokio::time::timeout_at(deadline, negotiate(shared, stream)).await {
            Ok(negotiated) => negotiated?,
            Err(_) => {
                tracing::info!("login timed out before the startup packet");
                return Err(LoginError::Refused("login_timeout before startup".into()));
            }
        };
    let mut client = LoginStream::new(stream);

    if major != 3 {
        return client
            .refuse(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("unsupported frontend protocol {major}.{minor}: sluice supports 3.0"),
            )
            .await;
    }
    if shared.config.tls.mode == ClientTlsMode::Require && !client.stream().is_private() {
        return client
            .refuse(
                sqlstate::INVALID_AUTHORIZATION,
                "sluice requires TLS: connect with sslmode=require".into(),
            )
            .await;
    }
    if over_capacity {
        tracing::warn!(
            max_connections = shared.config.server.max_connections,
            "connection refused: too many clients"
        );
        return client
            .refuse(
                sqlstate::TOO_MANY_CONNECTIONS,
                "sorry, too many clients already".into(),
            )
            .await;
    }
    let startup = match ClientStartup::from_params(params) {
        Ok(s) => s,
        Err(refusal) => return client.refuse(refusal.code, refusal.message).await,
    };
    // Logins refused after the client said who it is are audited, by reason class.
    let failed = |reason: &str| {
        shared
            .metrics
            .login_failures
            .get_or_create(&crate::metrics::ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
        shared.audit.record(Event::LoginFailure {
            client_addr: peer.to_owned(),
            user: Some(startup.user.clone()),
            database: Some(startup.database.clone()),
            reason: reason.to_owned(),
            via,
            unrecorded: None,
        })
    };
    let span = tracing::Span::current();
    span.record("user", startup.user.as_str());
    span.record("database", startup.database.as_str());
    if minor > 0 || !startup.protocol_options.is_empty() {
        client.queue(&messages::negotiate_protocol_version(
            startup.protocol_options.clone(),
        ));
    }

    // The token is the password. Cleartext is safe here: without TLS, `require` has already
    // refused the client, and `prefer` is the operator's explicit choice.
    client.queue(&messages::auth_cleartext_request());
    client.flush().await?;
    // A client that stalls here has said who it is: like Postgres it is told why it is dropped.
    let read = tokio::time::timeout_at(deadline, client.reader.next()).await;
    let Ok(read) = read else {
        tracing::info!("login timed out waiting for the token");
        failed("login_timeout");
        return client
            .refuse(
                sqlstate::QUERY_CANCELED,
                "canceling authentication due to timeout".into(),
            )
            .await;
    };
    let token = match read? {
        Some(frame) if frame.tag() == b'p' => {
            let body = frame.body();
            let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
            String::from_utf8_lossy(&body[..end]).into_owned()
        }
        Some(frame) => {
            return client
                .refuse(
                    sqlstate::PROTOCOL_VIOLATION,
                    format!("expected a password message, got {:?}", frame.tag() as char),
                )
                .await;
        }
        None => {
            failed("no_token");
            return Err(LoginError::Refused(
                "client left before sending a token".into(),
            ));
        }
    };
    let grant = match shared
        .tokens
        .authenticate(&token, &startup.user, &startup.database)
    {
        Ok(grant) => grant,
        Err(e) => match external::login(shared, &token, &startup.user, &startup.database).await {
            External::Granted(grant) => {
                tracing::info!(issuer = ?grant.origin, "logged in with a trusted issuer's own token");
                *grant
            }
            refused => {
                let (class, why) = match refused {
                    External::Refused { class, why } => (class, why),
                    _ => (e.class(), String::new()),
                };
                tracing::warn!(reason = class, "token refused");
                failed(class);
                let why = if why.is_empty() {
                    why
                } else {
                    format!(": {why}")
                };
                return client
                    .refuse(
                        sqlstate::INVALID_PASSWORD,
                        format!(
                            "password authentication failed for user \"{}\"{why}",
                            startup.user
                        ),
                    )
                    .await;
            }
        },
    };
    span.record("subject", grant.subject.as_str());
    span.record("token_id", grant.token_id.as_str());
    if let Some(revocation) = shared.revocations.matching(&grant) {
        tracing::warn!(revocation = %revocation.id, "revoked token refused");
        failed("revoked");
        return client
            .refuse(
                sqlstate::INVALID_PASSWORD,
                format!(
                    "password authentication failed for user \"{}\": the token was revoked ({})",
                    startup.user, revocation.id
                ),
            )
            .await;
    }
    let per_subject = shared.config.server.max_connections_per_subject;
    let Some(subject_slot) = shared.limits.subject(&grant.subject, per_subject) else {
        tracing::warn!(
            max_connections_per_subject = per_subject,
            "connection refused: subject holds too many sessions"
        );
        failed("too_many_connections_for_subject");
        return client
            .refuse(
                sqlstate::TOO_MANY_CONNECTIONS,
                format!("too many connections for subject \"{}\"", grant.subject),
            )
            .await;
    };

    let Some(upstream) = shared.upstreams.get(&grant.database).cloned() else {
        failed("unknown_database");
        return client
            .refuse(
                sqlstate::INVALID_CATALOG_NAME,
                format!(
                    "database \"{}\" is not served by this gateway",
                    grant.database
                ),
            )
            .await;
    };
    if let Err(refusal) = startup.check_statement_timeout(upstream.statement_timeout()) {
        failed("refused_parameter");
        return client.refuse(refusal.code, refusal.message).await;
    }
    let target = upstream.target();
    // The role the grant's groups map to, or the URL's user where roles are mapped only if the
    // configuration says so: a token that drops its mapped groups must not get the gateway's
    // own (usually broader) role.
    let user = match upstream.role_for(&grant.groups) {
        Some(role) => role.name.as_str(),
        None if upstream.url_user_allowed() => target.user.as_str(),
        None => {
            failed("no_mapped_role");
            return client
                .refuse(
                    sqlstate::INVALID_AUTHORIZATION,
                    format!(
                        "no role of database \"{}\" is mapped to this token's groups",
                        grant.database
                    ),
                )
                .await;
        }
    };
    let mut params = startup.upstream_params(
        &grant.subject,
        user,
        &target.database,
        upstream.statement_timeout(),
    );
    // Last, so that it wins over anything the client asked for (its `options` are applied
    // before startup parameters): Postgres itself runs a read-only grant read-only.
    if grant.read_only {
        params.push(("default_transaction_read_only".to_owned(), "on".to_owned()));
    }
    let session = match upstream
        .session_for(
            crate::upstream::WarmFor::new(&grant, params),
            shared.config.server.max_message_size,
        )
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "upstream login failed");
            failed("upstream_login_failed");
            shared
                .metrics
                .upstream_connect_errors
                .get_or_create(&crate::metrics::DatabaseLabels {
                    database: grant.database.clone(),
                })
                .inc();
            return client
                .refuse(
                    sqlstate::CONNECTION_FAILURE,
                    "sluice could not open a session on the upstream database".into(),
                )
                .await;
        }
    };

    let cancel_key = shared.cancels.register(
        upstream.clone(),
        session.backend_pid,
        session.backend_secret,
    );
    client.queue(&messages::auth_ok());
    for message in &session.login_messages {
        client.queue(message);
    }
    client.queue(&messages::backend_key_data(
        cancel_key.pid,
        cancel_key.secret,
    ));
    client.queue(&session.ready_for_query);
    client.flush().await?;
    tracing::info!("session established");

    Ok(Established {
        client: client.reader,
        grant,
        application_name: startup.application_name.clone(),
        upstream: session,
        cancel_key,
        subject_slot,
    })
}

async fn upgrade(shared: &Shared, stream: ClientStream) -> Result<ClientStream, LoginError> {
    match stream {
        ClientStream::Tcp(tcp) => Ok(ClientStream::Tls(Box::new(shared.tls.accept(tcp).await?))),
        other => Ok(other),
    }
}

/// The client stream during login, used both to read and to write. After login the session
/// splits it into halves; here a single owner is simpler.
struct LoginStream<S> {
    reader: FrameReader<S>,
    out: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> LoginStream<S> {
    fn new(stream: S) -> Self {
        LoginStream {
            reader: FrameReader::new(stream, MAX_AUTH_MESSAGE),
            out: BytesMut::new(),
        }
    }

    fn stream(&mut self) -> &mut S {
        self.reader.get_mut()
    }

    fn queue(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        let out = std::mem::take(&mut self.out);
        let stream = self.reader.get_mut();
        stream.write_all(&out).await?;
        stream.flush().await
    }

    async fn refuse<T>(&mut self, code: &'static str, message: String) -> Result<T, LoginError> {
        tracing::info!(code, %message, "login refused");
        self.queue(&messages::fatal(code, message.clone()));
        self.flush().await?;
        let _ = self.reader.get_mut().shutdown().await;
        Err(LoginError::Refused(message))
    }
}
