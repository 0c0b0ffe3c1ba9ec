//! The server leg: connecting to the real Postgres, TLS per config, and logging in with the
//! gateway's own credentials (SCRAM-SHA-256, md5, cleartext or trust), or handing out a warm
//! connection that logged in the same way (`warm.rs`).

mod session;
pub mod warm;

pub use session::{UpstreamSession, UpstreamStream, WarmFor};

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;

use crate::config::{ConfigError, UpstreamConfig, UpstreamTarget, UpstreamTlsMode};
use crate::wire::backend::{error_field, error_summary};
use crate::wire::frame::{FrameError, FrameReader};

/// Why the gateway could not get an upstream session. Never carries the password.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream refused TLS, which tls = \"{0}\" requires")]
    TlsRefused(&'static str),
    #[error("TLS handshake with upstream failed: {0}")]
    Tls(std::io::Error),
    #[error("upstream rejected the login: {summary}")]
    Rejected { sqlstate: String, summary: String },
    #[error("upstream asks for {0} authentication, which sluice does not support")]
    UnsupportedAuth(&'static str),
    #[error("upstream asks for a password but none is configured (password_env/password_file)")]
    MissingPassword,
    #[error("SCRAM exchange with upstream failed: {0}")]
    Scram(std::io::Error),
    #[error("upstream broke the protocol: {0}")]
    Protocol(String),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Keepalive probes on upstream connections: after 30 s of silence, every 10 s, 3 times.
const UPSTREAM_KEEPALIVE: socket2::TcpKeepalive = socket2::TcpKeepalive::new()
    .with_time(Duration::from_secs(30))
    .with_interval(Duration::from_secs(10))
    .with_retries(3);

/// One configured upstream database: where it is and how to log in.
pub struct Upstream {
    target: UpstreamTarget,
    password: Option<String>,
    tls_mode: UpstreamTlsMode,
    tls: Option<Arc<rustls::ClientConfig>>,
    connect_timeout: Duration,
    statement_timeout: Duration,
    /// Roles sessions log in as, by token group (`[[upstream.roles]]`).
    roles: Vec<MappedRole>,
    /// With roles mapped: whether a grant none maps to logs in as the URL's user.
    url_user_for_unmapped: bool,
    /// Connections of sessions that ended at rest, reset, for the next identical login.
    warm: Arc<warm::WarmPool>,
}

/// A role sessions log in as, the token groups mapped to it, and its password.
pub struct MappedRole {
    pub name: String,
    pub groups: Vec<String>,
    password: Option<String>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("target", &self.target)
            .field("tls_mode", &self.tls_mode)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// `statement_timeout` is `[limits]`' budget, for upstreams without their own.
    pub fn from_config(
        config: &UpstreamConfig,
        password: Option<String>,
        file: &std::path::Path,
        statement_timeout: Duration,
    ) -> Result<Upstream, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            file: file.to_owned(),
            key: format!("upstream({}).{key}", config.database),
            message,
        };
        let target = UpstreamTarget::parse(&config.url).map_err(|m| invalid("url", m))?;
        let tls = crate::tls::upstream_config(config.tls, config.ca_file.as_deref())
            .map_err(|e| invalid("ca_file", e.to_string()))?;
        Ok(Upstream {
            target,
            password,
            tls_mode: config.tls,
            tls,
            connect_timeout: config.connect_timeout,
            statement_timeout: config.statement_timeout.unwrap_or(statement_timeout),
            roles: Vec::new(),
            url_user_for_unmapped: config.url_user_for_unmapped,
            warm: Arc::new(warm::WarmPool::new(
                config.warm_connections,
                config.warm_idle_timeout,
            )),
        })
    }

    /// Adds the roles of `[[upstream.roles]]`, with their passwords in the same order.
    pub fn with_roles(
        mut self,
        roles: &[crate::config::UpstreamRoleConfig],
        passwords: Vec<Option<String>>,
    ) -> Upstream {
        self.roles = roles
            .iter()
            .zip(passwords)
            .map(|(role, password)| MappedRole {
                name: role.name.clone(),
                groups: role.groups.clone(),
                password,
            })
            .collect();
        self
    }

    /// Counts its warm connections in `metrics`, under the database clients ask for.
    pub fn counted_in(mut self, metrics: &crate::metrics::Metrics, database: &str) -> Upstream {
        Arc::get_mut(&mut self.warm)
            .expect("counted before it is shared")
            .count_in(metrics, database);
        self
    }

    /// Whether a session no role is mapped to may log in as the URL's user: always without
    /// `[[upstream.roles]]`, with them only when `url_user_for_unmapped` says so.
    pub fn url_user_allowed(&self) -> bool {
        self.roles.is_empty() || self.url_user_for_unmapped
    }

    /// The role a session whose token carries `groups` logs in as: the first listed role
    /// mapped to one of them, if any.
    pub fn role_for(&self, groups: &[String]) -> Option<&MappedRole> {
        self.roles
            .iter()
            .find(|role| role.groups.iter().any(|g| groups.contains(g)))
    }

    /// Where sessions that end at rest hand their connections back.
    pub fn warm(&self) -> &Arc<warm::WarmPool> {
        &self.warm
    }

    pub fn target(&self) -> &UpstreamTarget {
        &self.target
    }

    /// How long one statement may run on this database (zero: no budget).
    pub fn statement_timeout(&self) -> Duration {
        self.statement_timeout
    }

    /// A session for the token `warm` names, logged in with its startup parameters: a warm one
    /// of the same key if one waits, else a new login. A login that Postgres refuses for want of
    /// connection slots closes the warm connections and tries once more: they are the
    /// gateway's own to give back.
    pub async fn session_for(
        &self,
        warm: WarmFor,
        max_message: usize,
    ) -> Result<UpstreamSession, UpstreamError> {
        let key = &warm.key;
        if let Some(session) = self.warm.take(key) {
            tracing::debug!(pid = session.backend_pid, "warm upstream connection taken");
            return Ok(session);
        }
        let mut login = self.login(&key.params, max_message).await;
        if let Err(UpstreamError::Rejected { sqlstate, .. }) = &login
            && sqlstate == crate::wire::sqlstate::TOO_MANY_CONNECTIONS
            && self.warm.close_all().await > 0
        {
            login = self.login(&key.params, max_message).await;
        }
        let mut session = login?;
        session.warm = Some(warm);
        Ok(session)
    }

    /// Connects and logs in with `params` as the startup parameters.
    pub async fn login(
        &self,
        params: &[(String, String)],
        max_message: usize,
    ) -> Result<UpstreamSession, UpstreamError> {
        tokio::time::timeout(self.connect_timeout, self.login_inner(params, max_message))
            .await
            .map_err(|_| UpstreamError::Timeout(self.connect_timeout))?
    }

    async fn login_inner(
        &self,
        params: &[(String, String)],
        max_message: usize,
    ) -> Result<UpstreamSession, UpstreamError> {
        let stream = self.open().await?;
        self.authenticate(stream, params, max_message).await
    }

    /// The startup exchange on an open connection, up to the first ReadyForQuery. Everything the
    /// upstream sends is checked: it may be compromised or not Postgres at all.
    pub(super) async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        params: &[(String, String)],
        max_message: usize,
    ) -> Result<UpstreamSession<S>, UpstreamError> {
        let mut buf = BytesMut::new();
        frontend::startup_message(
            params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &mut buf,
        )?;
        stream.write_all(&buf).await?;
        stream.flush().await?;

        // A mapped role logs in with its own password; anyone else with the URL user's.
        let user = params
            .iter()
            .find(|(k, _)| k == "user")
            .map_or("", |(_, v)| v.as_str());
        let password = match self.roles.iter().find(|r| r.name == user) {
            Some(role) => role.password.as_deref(),
            None => self.password.as_deref(),
        };
        let password = || password.ok_or(UpstreamError::MissingPassword);
        let mut reader = FrameReader::new(stream, max_message);
        let mut scram: Option<ScramSha256> = None;
        let mut login_messages = Vec::new();
        let mut key = None;
        loop {
            let frame = reader
                .next()
                .await?
                .ok_or_else(|| UpstreamError::Protocol("connection closed during login".into()))?;
            let mut bytes = BytesMut::from(&frame.raw()[..]);
            let message = Message::parse(&mut bytes)
                .map_err(|e| UpstreamError::Protocol(e.to_string()))?
                .ok_or_else(|| UpstreamError::Protocol("incomplete message".into()))?;
            let mut reply = BytesMut::new();
            match message {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password()?.as_bytes(), &mut reply)?;
                }
                Message::AuthenticationMd5Password(body) => {
                    // Salted with the user logging in (a mapped role's name, not the URL's).
                    let hash = postgres_protocol::authentication::md5_hash(
                        user.as_bytes(),
                        password()?.as_bytes(),
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut reply)?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut offered = body.mechanisms();
                    let mut has_scram = false;
                    while let Some(m) = fallible_next(&mut offered)? {
                        has_scram |= m == SCRAM_SHA_256;
                    }
                    if !has_scram {
                        return Err(UpstreamError::UnsupportedAuth("SASL without SCRAM-SHA-256"));
                    }
                    // Channel binding would need the upstream certificate hash; without it the
                    // client says "n" and Postgres accepts plain SCRAM-SHA-256.
                    let state =
                        ScramSha256::new(password()?.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, state.message(), &mut reply)?;
                    scram = Some(state);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let state = scram.as_mut().ok_or_else(|| {
                        UpstreamError::Protocol("SASL continue before SASL start".into())
                    })?;
                    state.update(body.data()).map_err(UpstreamError::Scram)?;
                    frontend::sasl_response(state.message(), &mut reply)?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let state = scram.as_mut().ok_or_else(|| {
                        UpstreamError::Protocol("SASL final before SASL start".into())
                    })?;
                    // Verifies the server's signature: the upstream proves it knows the secret.
                    state.finish(body.data()).map_err(UpstreamError::Scram)?;
                }
                Message::AuthenticationKerberosV5 => {
                    return Err(UpstreamError::UnsupportedAuth("Kerberos"));
                }
                Message::AuthenticationGss | Message::AuthenticationGssContinue(_) => {
                    return Err(UpstreamError::UnsupportedAuth("GSSAPI"));
                }
                Message::AuthenticationSspi => return Err(UpstreamError::UnsupportedAuth("SSPI")),
                Message::AuthenticationScmCredential => {
                    return Err(UpstreamError::UnsupportedAuth("SCM credential"));
                }
                Message::BackendKeyData(body) => {
                    key = Some((body.process_id(), body.secret_key()));
                }
                Message::ParameterStatus(_) | Message::NoticeResponse(_) => {
                    login_messages.push(frame.raw().clone());
                }
                Message::ErrorResponse(_) => {
                    return Err(UpstreamError::Rejected {
                        sqlstate: error_field(frame.body(), b'C').unwrap_or_default(),
                        summary: error_summary(frame.body()),
                    });
                }
                Message::ReadyForQuery(_) => {
                    let (backend_pid, backend_secret) = key.ok_or_else(|| {
                        UpstreamError::Protocol("no BackendKeyData before ReadyForQuery".into())
                    })?;
                    let (stream, buffered) = reader.into_parts();
                    return Ok(UpstreamSession {
                        stream,
                        buffered,
                        backend_pid,
                        backend_secret,
                        login_messages,
                        ready_for_query: frame.raw().clone(),
                        warm: None,
                    });
                }
                other => {
                    return Err(UpstreamError::Protocol(format!(
                        "unexpected message during login: {}",
                        message_name(&other)
                    )));
                }
            }
            if !reply.is_empty() {
                reader.get_mut().write_all(&reply).await?;
                reader.get_mut().flush().await?;
            }
        }
    }

    /// A TCP connection to the upstream, TLS-wrapped as the config says.
    async fn open(&self) -> Result<UpstreamStream, UpstreamError> {
        let addr = format!("{}:{}", self.target.host, self.target.port);
        let tcp = TcpStream::connect((self.target.host.as_str(), self.target.port))
            .await
            .map_err(|source| UpstreamError::Connect { addr, source })?;
        tcp.set_nodelay(true)?;
        // An idle connection (a warm one, a session between statements) to a database that
        // has vanished without a word — a failover, a partition — is found out within about a
        // minute instead of hanging until the next write times out.
        socket2::SockRef::from(&tcp).set_tcp_keepalive(&UPSTREAM_KEEPALIVE)?;
        let Some(tls) = &self.tls else {
            return Ok(Either::Right(tcp));
        };
        let mut tcp = tcp;
        let mut request = BytesMut::new();
        frontend::ssl_request(&mut request);
        tcp.write_all(&request).await?;
        match tcp.read_u8().await? {
            b'S' => {
                let name = ServerName::try_from(self.target.host.clone())
                    .map_err(|e| UpstreamError::Tls(std::io::Error::other(e)))?;
                let stream = TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(UpstreamError::Tls)?;
                Ok(Either::Left(stream))
            }
            b'N' if self.tls_mode == UpstreamTlsMode::Prefer => Ok(Either::Right(tcp)),
            b'N' => Err(UpstreamError::TlsRefused(match self.tls_mode {
                UpstreamTlsMode::VerifyFull => "verify-full",
                _ => "require",
            })),
            other => Err(UpstreamError::Protocol(format!(
                "unexpected answer {other:#x} to SSLRequest"
            ))),
        }
    }

    /// Forwards a cancel request for the upstream backend `pid`/`secret` on a new connection,
    /// as Postgres expects.
    pub async fn cancel(&self, pid: i32, secret: i32) -> Result<(), UpstreamError> {
        let mut stream = tokio::time::timeout(self.connect_timeout, self.open())
            .await
            .map_err(|_| UpstreamError::Timeout(self.connect_timeout))??;
        let mut buf = BytesMut::new();
        frontend::cancel_request(pid, secret, &mut buf);
        stream.write_all(&buf).await?;
        stream.flush().await?;
        // Postgres closes the connection once it has read the request; waiting for that keeps
        // the cancel ordered before whatever the client does next.
        let mut sink = [0u8; 1];
        let _ = tokio::time::timeout(self.connect_timeout, stream.read(&mut sink)).await;
        Ok(())
    }
}

fn fallible_next<'a>(
    it: &mut postgres_protocol::message::backend::SaslMechanisms<'a>,
) -> Result<Option<&'a str>, UpstreamError> {
    use fallible_iterator::FallibleIterator;
    it.next()
        .map_err(|e| UpstreamError::Protocol(e.to_string()))
}

fn message_name(message: &Message) -> &'static str {
    match message {
        Message::RowDescription(_) => "RowDescription",
        Message::DataRow(_) => "DataRow",
        Message::CommandComplete(_) => "CommandComplete",
        Message::NotificationResponse(_) => "NotificationResponse",
        _ => "a message that only belongs after login",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn upstream_connections_probe_a_silent_peer_with_keepalives() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let config: UpstreamConfig = toml::from_str(&format!(
            "database = \"app\"\nurl = \"postgres://gw@127.0.0.1:{port}/app\"\ntls = \"disable\"\n"
        ))
        .unwrap();
        let upstream = Upstream::from_config(
            &config,
            None,
            std::path::Path::new("sluice.toml"),
            Duration::ZERO,
        )
        .unwrap();
        let Either::Right(tcp) = upstream.open().await.unwrap() else {
            panic!("tls = \"disable\" opens plain TCP");
        };
        let socket = socket2::SockRef::from(&tcp);
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(10)
        );
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 3);
    }
}
