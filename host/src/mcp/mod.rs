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
mod http;
mod progress;
mod refusals;
mod sessions;
mod state;
mod tools;
mod verified;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use state::METADATA_PATH;
pub use state::{GatewayParts, McpState};

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
    let handlers = state.clone();
    // MCP sessions end with the database sessions behind them (`Sessions::reap`), never
    // while a call waits (a statement held for approval waits as long as approvers have).
    let mut manager = LocalSessionManager::default();
    manager.session_config.keep_alive = None;
    // A finished call's answer is kept this long for a client resuming its stream.
    manager.session_config.completed_cache_ttl = Duration::from_secs(10);
    let manager = Arc::new(manager);
    tokio::spawn(
        state
            .sessions
            .clone()
            .reap(manager.clone(), stop.child_token()),
    );
    let service = StreamableHttpService::new(
        move || Ok(tools::Tools::new(handlers.clone())),
        manager,
        config,
    );
    let mcp =
        Router::new()
            .nest_service("/mcp", service)
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                auth::authenticate,
            ));
    let (tls, max_connections) = (state.tls.clone(), state.max_connections);
    let router = Router::new()
        .route(METADATA_PATH, get(metadata))
        .route(&format!("{METADATA_PATH}/mcp"), get(metadata))
        .with_state(state)
        .merge(mcp);
    let scheme = if tls.is_some() {
        "HTTPS"
    } else {
        "HTTP, loopback"
    };
    tokio::spawn(http::serve(listener, router, tls, max_connections, stop));
    tracing::info!(%local, "MCP listener up ({scheme})");
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
