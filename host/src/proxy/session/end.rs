//! Why a session ends, as the audit log names it, and what each side is told.

use bytes::Bytes;

use crate::wire::backend as messages;
use crate::wire::sqlstate;

/// Why a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The client sent Terminate.
    ClientTerminated,
    /// The client closed its connection without Terminate.
    ClientDisconnected,
    /// The upstream closed the connection after a FATAL of its own, relayed to the client.
    UpstreamClosed,
    /// The upstream closed the connection without saying why.
    UpstreamVanished,
    TokenExpired,
    /// The token was revoked (the revocation's id and reason).
    Revoked {
        id: String,
        reason: String,
    },
    Shutdown,
    /// Nothing in flight and nothing from the client for `idle_timeout`.
    IdleTimeout,
    ClientProtocol(String),
    UpstreamProtocol(String),
    ClientIo(std::io::Error),
    UpstreamIo(std::io::Error),
    /// The upstream reported a setting that makes it read statements differently from the
    /// gateway (`reading.rs`).
    ReadingChanged(String),
    /// The upstream sent a message larger than `max_upstream_message_size`.
    UpstreamTooLarge {
        len: usize,
        max: usize,
    },
}

impl SessionEnd {
    /// A short name for the audit log.
    pub fn class(&self) -> &'static str {
        match self {
            SessionEnd::ClientTerminated => "client_terminated",
            SessionEnd::ClientDisconnected => "client_disconnected",
            SessionEnd::UpstreamClosed => "upstream_closed",
            SessionEnd::UpstreamVanished => "upstream_vanished",
            SessionEnd::TokenExpired => "token_expired",
            SessionEnd::Revoked { .. } => "revoked",
            SessionEnd::Shutdown => "shutdown",
            SessionEnd::IdleTimeout => "idle_timeout",
            SessionEnd::ClientProtocol(_) => "client_protocol_error",
            SessionEnd::UpstreamProtocol(_) => "upstream_protocol_error",
            SessionEnd::ClientIo(_) => "client_io_error",
            SessionEnd::UpstreamIo(_) => "upstream_io_error",
            SessionEnd::ReadingChanged(_) => "reading_changed",
            SessionEnd::UpstreamTooLarge { .. } => "upstream_message_too_large",
        }
    }

    /// Whether the client left of its own accord: then an upstream connection at rest may be
    /// kept warm for its next session.
    pub(super) fn client_left(&self) -> bool {
        matches!(
            self,
            SessionEnd::ClientTerminated | SessionEnd::ClientDisconnected
        )
    }

    /// What the client and the upstream are sent as the session ends this way (a FATAL the
    /// client can act on; Terminate, unless the upstream is gone). A connection kept warm gets
    /// neither.
    pub(super) fn farewell(&self) -> (Option<Bytes>, Option<Bytes>) {
        let to_client = match self {
            SessionEnd::TokenExpired => Some(messages::fatal(
                sqlstate::INVALID_AUTHORIZATION,
                "terminating connection because the session token expired",
            )),
            SessionEnd::Revoked { id, reason } => Some(messages::fatal(
                sqlstate::INVALID_AUTHORIZATION,
                format!(
                    "terminating connection because its token was revoked (revocation {id}: {reason})"
                ),
            )),
            SessionEnd::Shutdown => Some(messages::fatal(
                sqlstate::ADMIN_SHUTDOWN,
                "terminating connection because the gateway is shutting down",
            )),
            SessionEnd::IdleTimeout => Some(messages::fatal(
                sqlstate::IDLE_SESSION_TIMEOUT,
                "terminating connection due to idle-session timeout",
            )),
            SessionEnd::ClientProtocol(why) => {
                Some(messages::fatal(sqlstate::PROTOCOL_VIOLATION, why))
            }
            SessionEnd::UpstreamTooLarge { len, max } => Some(messages::fatal(
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "sluice: the database sent a message of {len} bytes, more than server.max_upstream_message_size ({max} bytes); the session ends"
                ),
            )),
            SessionEnd::ReadingChanged(why) => Some(messages::fatal(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                format!("sluice: {why}"),
            )),
            SessionEnd::UpstreamProtocol(_)
            | SessionEnd::UpstreamIo(_)
            | SessionEnd::UpstreamVanished => Some(messages::fatal(
                sqlstate::CONNECTION_FAILURE,
                "terminating connection because the upstream connection failed",
            )),
            _ => None,
        };
        let to_upstream = match self {
            SessionEnd::UpstreamClosed | SessionEnd::UpstreamVanished => None,
            _ => Some(messages::terminate()),
        };
        (to_client, to_upstream)
    }
}
