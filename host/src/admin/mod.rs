//! The admin HTTP listener: health and readiness, plugin status, the approvals API and page,
//! and revocations.

pub mod approvals;
mod auth;
mod page;
pub mod revocations;
pub mod sign_in;
mod state;
pub mod token_exchange;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub use state::{AdminState, ApprovalsApi, ExchangeApi, RevocationsApi};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/v1/plugins", get(plugins))
        .route("/metrics", get(metrics))
        .merge(approvals::routes())
        .merge(revocations::routes())
        .merge(token_exchange::routes())
        .merge(page::routes())
        .merge(sign_in::routes())
        .with_state(state)
}

/// Every plugin file: the version serving (content hash) and, if the file on disk could not
/// be loaded, why.
async fn plugins(
    State(state): State<Arc<AdminState>>,
) -> axum::Json<Vec<crate::plugins::PluginStatus>> {
    axum::Json(
        state
            .plugins
            .as_ref()
            .map(|p| p.status())
            .unwrap_or_default(),
    )
}

async fn ready(State(state): State<Arc<AdminState>>) -> (StatusCode, &'static str) {
    if !state.accepting.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if state.audit.as_ref().is_some_and(|a| a.refusing()) {
        (StatusCode::SERVICE_UNAVAILABLE, "audit log not writable\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

/// Prometheus text exposition.
async fn metrics(State(state): State<Arc<AdminState>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(metrics) = &state.metrics else {
        return (StatusCode::NOT_FOUND, "no metrics here\n").into_response();
    };
    if let Some(api) = &state.approvals
        && let Ok(pending) = api.approvals.pending().await
    {
        metrics.approvals_pending.set(pending.len() as i64);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}

/// Binds `addr` and serves until `stop` fires. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<AdminState>,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        let server = axum::serve(listener, router(state))
            .with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(e) = server.await {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    tracing::info!(%local, "admin listener up");
    Ok(local)
}
