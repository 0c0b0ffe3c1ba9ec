//! `POST /v1/token`: OAuth 2.0 Token Exchange (RFC 8693). A workload (or person) sends the
//! token its platform gave it, names one database (`audience`) and says why (`reason`), and
//! gets a short-lived gateway token for it, if its issuer is trusted
//! (`[[identity.issuers]]`), its principal is among the issuer's `subjects`, the database among
//! its `databases`, nothing about it is revoked, and the access plugins allow it
//! (`decide.rs`). With an `actor_token` the token is for the subject, acted on by the actor
//! (`act`). When a plugin requires approval the request joins the approvals queue and the
//! requester waits (`wait`, seconds) or asks again with `request_id` (`pending.rs`); the answer
//! meanwhile is RFC 8628's `authorization_pending`. The lifetime asked for (`expires_in`,
//! seconds; default 15 minutes) is capped by the issuer's `max_ttl`, `identity.max_ttl`, the
//! presented tokens' own remaining lives and the plugins. Every request is recorded in the audit
//! log: issued, pending, denied, refused or invalid.

mod answer;
mod asked;
mod decide;
mod parties;
mod pending;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::state::AdminState;
use crate::audit::Event;
pub use answer::{GRANT_TYPE, Issued, JWT, PENDING};
pub use asked::MAX_WAIT;
use asked::{MAX_REASON, read_request};

pub fn routes() -> Router<Arc<AdminState>> {
    Router::new().route("/v1/token", post(exchange))
}

async fn exchange(
    State(state): State<Arc<AdminState>>,
    body: Bytes,
) -> Result<Json<Issued>, Response> {
    let Some(api) = state.exchange.as_ref() else {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "token exchange is not served here",
        )
            .into_response());
    };
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let asked = match read_request(&field) {
        Ok(asked) => asked,
        Err(e) => {
            // Recorded too: a malformed request is someone asking.
            api.audit.record(Event::TokenExchange {
                issuer: None,
                principal: None,
                actor: None,
                database: field("audience").unwrap_or_default().to_owned(),
                reason: field("reason")
                    .unwrap_or_default()
                    .chars()
                    .take(MAX_REASON)
                    .collect(),
                outcome: "invalid",
                why: Some(e.description.clone()),
                token_id: None,
                ttl_seconds: None,
                groups: Vec::new(),
                approval: field("request_id").map(parties::approval_id),
            });
            return Err(e.into_response());
        }
    };
    let answer = match asked.request_id {
        Some(id) => pending::poll(api, &asked, id).await,
        None => decide::ask(api, &asked).await,
    };
    answer.map(Json).map_err(IntoResponse::into_response)
}
