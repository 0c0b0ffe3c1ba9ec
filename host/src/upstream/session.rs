//! A logged-in upstream connection and what its login said.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use crate::identity::Grant;

pub type UpstreamStream = Either<TlsStream<TcpStream>, TcpStream>;

/// A connection that may be kept warm: its key, and the grant of the token it serves, whose
/// expiry or revocation closes it.
#[derive(Debug, Clone)]
pub struct WarmFor {
    pub key: WarmKey,
    pub grant: Arc<Grant>,
}

impl WarmFor {
    /// For a session of `grant`'s token logging in with `params`.
    pub fn new(grant: &Grant, params: Vec<(String, String)>) -> WarmFor {
        WarmFor {
            key: WarmKey {
                issuer: grant.issuer.clone(),
                subject: grant.subject.clone(),
                token_id: grant.token_id.clone(),
                params,
            },
            grant: Arc::new(grant.clone()),
        }
    }
}

/// What a warm connection is kept under: the token whose session it served (its issuer,
/// subject and id) and the startup parameters it logged in with (who it acts as, its session
/// defaults). Only a session of the same token with the same parameters is handed it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WarmKey {
    pub issuer: String,
    pub subject: String,
    pub token_id: String,
    pub params: Vec<(String, String)>,
}

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
    /// Where it goes back to when its session ends at rest; none for connections that are
    /// never kept warm (the catalog reader's).
    pub warm: Option<WarmFor>,
}
