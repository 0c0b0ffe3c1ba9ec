//! What the MCP server holds: the parts of the gateway it uses, its sessions, its limits and
//! how clients reach it.

use std::net::SocketAddr;
use std::sync::Arc;

use super::client::Limits;
use super::http;
use super::refusals::RefusalLog;
use super::sessions::Sessions;
use super::verified::VerifiedTokens;
use crate::proxy::LocalDoor;

/// What the MCP server takes from the gateway's services.
pub struct GatewayParts {
    pub tokens: Arc<crate::identity::TokenAuthority>,
    pub issuers: Arc<crate::identity::external::TrustedIssuers>,
    pub revocations: Arc<crate::revocations::Revocations>,
    /// Refused tokens are recorded, as the Postgres listener records refused logins.
    pub audit: Arc<crate::audit::Audit>,
    /// The certificate Postgres clients see, for a listener off loopback.
    pub tls: tokio_rustls::TlsAcceptor,
    pub(super) verified: VerifiedTokens,
    pub(super) refusals: RefusalLog,
}

impl GatewayParts {
    pub fn of(services: &crate::services::Services) -> GatewayParts {
        GatewayParts {
            tokens: services.tokens.clone(),
            issuers: services.issuers.clone(),
            revocations: services.revocations.clone(),
            audit: services.audit.clone(),
            tls: http::acceptor(services.tls.config()),
            verified: VerifiedTokens::default(),
            refusals: RefusalLog::default(),
        }
    }
}

/// What the MCP server needs from the gateway.
pub struct McpState {
    pub(super) gateway: GatewayParts,
    /// This server's URL as clients reach it.
    pub(super) public_url: url::Url,
    /// Where tokens come from (the admin listener), if advertised.
    pub(super) authorization_server: Option<url::Url>,
    pub(super) sessions: Arc<Sessions>,
    pub(super) limits: Limits,
    /// The gateway's TLS, for a listener off loopback.
    pub(super) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(super) max_connections: usize,
}

impl McpState {
    pub fn new(
        config: &crate::config::McpConfig,
        listen: SocketAddr,
        gateway: GatewayParts,
        door: LocalDoor,
    ) -> McpState {
        let tls = http::wants_tls(listen).then(|| gateway.tls.clone());
        let scheme = if tls.is_some() { "https" } else { "http" };
        McpState {
            gateway,
            tls,
            public_url: config.public_url.clone().unwrap_or_else(|| {
                url::Url::parse(&format!("{scheme}://{listen}")).expect("an address is a URL host")
            }),
            authorization_server: config.authorization_server.clone(),
            sessions: Arc::new(Sessions::new(door, config.idle_timeout)),
            max_connections: config.max_connections,
            limits: Limits {
                rows: config.row_limit,
                bytes: config.max_result_bytes,
            },
        }
    }
}

pub(super) const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

impl McpState {
    pub(super) fn resource(&self) -> String {
        format!(
            "{}mcp",
            self.public_url.as_str().trim_end_matches('/').to_owned() + "/"
        )
    }

    pub(super) fn metadata_url(&self) -> String {
        format!(
            "{}{METADATA_PATH}",
            self.public_url.as_str().trim_end_matches('/')
        )
    }
}
