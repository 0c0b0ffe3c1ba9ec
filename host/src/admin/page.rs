//! The approver web page: static HTML and script, talking to `/v1/approvals` with the token the
//! approver pastes. Served with a policy that allows only its own script and forbids framing
//! (an approve button must not be clickjackable).

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::state::AdminState;

const HTML: &str = include_str!("page/approvals.html");
const SCRIPT: &str = include_str!("page/approvals.js");

const SECURITY_HEADERS: [(header::HeaderName, &str); 4] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'",
    ),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
];

pub fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/approvals", get(page))
        .route("/approvals.js", get(script))
}

async fn page() -> impl IntoResponse {
    (
        SECURITY_HEADERS,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        HTML,
    )
}

async fn script() -> impl IntoResponse {
    (
        SECURITY_HEADERS,
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}
