//! The admin HTTP listener: health and readiness, plugin status, and the approvals API.

pub mod approvals;
mod page;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use approvals::ApprovalsApi;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the admin endpoints report on.
#[derive(Default)]
pub struct AdminState {
    /// False once the gateway stops accepting clients (draining for shutdown).
    pub accepting: AtomicBool,
    /// The plugin host, when plugins are configured.
    pub plugins: Option<Arc<crate::plugins::PluginHost>>,
    /// The approval queue and what authenticates approvers; absent, the approvals API answers
    /// 503.
    pub approvals: Option<ApprovalsApi>,
    /// What `/metrics` serves.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Readiness also needs a writable audit log (when statements are refused without one).
    pub audit: Option<Arc<crate::audit::Audit>>,
}

impl AdminState {
    /// The admin view of the gateway's services: its plugins, its approval queue, its metrics
    /// and audit log.
    pub fn for_services(services: &crate::services::Services) -> AdminState {
        AdminState {
            accepting: AtomicBool::new(true),
            plugins: services.plugins.clone(),
            approvals: Some(ApprovalsApi {
                approvals: services.approvals.clone(),
                tokens: services.tokens.clone(),
            }),
            metrics: Some(services.metrics.clone()),
            audit: Some(services.audit.clone()),
        }
    }
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/v1/plugins", get(plugins))
        .route("/metrics", get(metrics))
        .merge(approvals::routes())
        .merge(page::routes())
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
