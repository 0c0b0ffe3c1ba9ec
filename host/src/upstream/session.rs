//! A logged-in upstream connection and what its login said.

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

pub type UpstreamStream = Either<TlsStream<TcpStream>, TcpStream>;

/// The startup parameters a connection logged in with: who it acts as and its session defaults.
pub type Login = Vec<(String, String)>;

/// A logged-in upstream session, ready for queries.
pub struct UpstreamSession<S = UpstreamStream> {
    pub stream: S,
    /// Bytes read past the login's ReadyForQuery.
    pub buffered: BytesMut,
    pub backend_pid: i32,
    pub backend_secret: i32,
    /// ParameterStatus and NoticeResponse messages of the login, to relay to the client.
    pub login_messages: Vec<Bytes>,
    /// The login's ReadyForQuery, to relay as is.
    pub ready_for_query: Bytes,
    /// The startup parameters it logged in with.
    pub startup: Login,
}
