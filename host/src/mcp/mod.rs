//! The agent front door: an MCP server over the Streamable HTTP transport (rmcp), at `/mcp`
//! on `[mcp] listen`. Every request carries a Sluice token (`Authorization: Bearer`); without
//! one, or with one refused, expired or revoked, the answer is 401 with `WWW-Authenticate`
//! naming the protected resource metadata (RFC 9728) served at
//! `/.well-known/oauth-protected-resource`, which names where tokens come from. Tool calls
//! (`tools.rs`) run as statements of a Postgres session the server opens inside the gateway
//! with the caller's token (`client.rs`, `sessions.rs`): the one path every statement takes.

mod answer;
mod auth;
mod call;
pub mod client;
mod https;
mod progress;
mod sessions;
mod tools;
mod verified;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::proxy::LocalDoor;
use sessions::Sessions;

/// What the MCP server takes from the gateway's services.
pub struct GatewayParts {
    pub tokens: Arc<crate::identity::TokenAuthority>,
    pub issuers: Arc<crate::identity::external::TrustedIssuers>,
    pub revocations: Arc<crate::revocations::Revocations>,
    /// Refused tokens are recorded, as the Postgres listener records refused logins.
    pub audit: Arc<crate::audit::Audit>,
    /// The certificate Postgres clients see, for a listener off loopback.
    pub tls: tokio_rustls::TlsAcceptor,
    verified: verified::VerifiedTokens,
}

impl GatewayParts {
    pub fn of(services: &crate::services::Services) -> GatewayParts {
        GatewayParts {
            tokens: services.tokens.clone(),
            issuers: services.issuers.clone(),
            revocations: services.revocations.clone(),
            audit: services.audit.clone(),
            tls: https::acceptor(services.tls.config()),
            verified: verified::VerifiedTokens::default(),
        }
    }
}

/// What the MCP server needs from the gateway.
pub struct McpState {
    gateway: GatewayParts,
    /// This server's URL as clients reach it.
    public_url: url::Url,
    /// Where tokens come from (the admin listener), if advertised.
    authorization_server: Option<url::Url>,
    sessions: Arc<Sessions>,
    limits: client::Limits,
    /// The gateway's TLS, for a listener off loopback.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl McpState {
    pub fn new(
        config: &crate::config::McpConfig,
        listen: SocketAddr,
        gateway: GatewayParts,
        door: LocalDoor,
    ) -> McpState {
        let tls = https::wanted(listen).then(|| gateway.tls.clone());
        let scheme = if tls.is_some() { "https" } else { "http" };
        McpState {
            gateway,
            tls,
            public_url: config.public_url.clone().unwrap_or_else(|| {
                url::Url::parse(&format!("{scheme}://{listen}")).expect("an address is a URL host")
            }),
            authorization_server: config.authorization_server.clone(),
            sessions: Arc::new(Sessions::new(door, config.idle_timeout)),
            limits: client::Limits {
                rows: config.row_limit,
                bytes: config.max_result_bytes,
            },
        }
    }
}

const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

impl McpState {
    fn resource(&self) -> String {
        format!(
            "{}mcp",
            self.public_url.as_str().trim_end_matches('/').to_owned() + "/"
        )
    }

    fn metadata_url(&self) -> String {
        format!(
            "{}{METADATA_PATH}",
            self.public_url.as_str().trim_end_matches('/')
        )
    }
}

/// Binds `addr` and serves until `stop` fires. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<McpState>,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let mut config = StreamableHttpServerConfig::default();
    config.cancellation_token = stop.child_token();
    // DNS rebinding protection: loopback names, and the name clients are told to use.
    if let Some(host) = state.public_url.host_str() {
        config.allowed_hosts.push(host.to_owned());
    }
    tokio::spawn(state.sessions.clone().reap(stop.child_token()));
    let handlers = state.clone();
    // MCP sessions idle out with the database sessions behind them.
    let mut manager = LocalSessionManager::default();
    manager.session_config.keep_alive = Some(state.sessions.idle_timeout);
    let service = StreamableHttpService::new(
        move || Ok(tools::Tools::new(handlers.clone())),
        manager.into(),
        config,
    );
    let mcp =
        Router::new()
            .nest_service("/mcp", service)
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                auth::authenticate,
            ));
    let tls = state.tls.clone();
    let router = Router::new()
        .route(METADATA_PATH, get(metadata))
        .route(&format!("{METADATA_PATH}/mcp"), get(metadata))
        .with_state(state)
        .merge(mcp);
    if let Some(tls) = tls {
        tokio::spawn(https::serve(listener, router, tls, stop));
        tracing::info!(%local, "MCP listener up (HTTPS)");
        return Ok(local);
    }
    tokio::spawn(async move {
        use axum::serve::ListenerExt;
        // Small answers go out at once, not after the peer's delayed ACK.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(e) = server.await {
            tracing::error!(error = %e, "MCP listener failed");
        }
    });
    tracing::info!(%local, "MCP listener up (HTTP, loopback)");
    Ok(local)
}

/// RFC 9728 protected resource metadata.
async fn metadata(State(state): State<Arc<McpState>>) -> Response {
    let servers: Vec<String> = state
        .authorization_server
        .iter()
        .map(|u| u.as_str().trim_end_matches('/').to_owned())
        .collect();
    axum::Json(serde_json::json!({
        "resource": state.resource(),
        "authorization_servers": servers,
        "bearer_methods_supported": ["header"],
        "resource_name": "Sluice",
    }))
    .into_response()
}
