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

mod decide;
mod pending;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};

use super::state::AdminState;
use crate::audit::Event;

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// The error code of an answer that is not ready: the request waits for approval (RFC 8628).
pub const PENDING: &str = "authorization_pending";
/// Subject and actor token types accepted: all are JWTs here.
const TOKEN_TYPES: &[&str] = &[
    JWT,
    "urn:ietf:params:oauth:token-type:id_token",
    "urn:ietf:params:oauth:token-type:access_token",
];
/// The lifetime issued when none is asked for.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// The longest one request waits for a decision before it is answered `authorization_pending`.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Longest reason kept.
const MAX_REASON: usize = 1000;

pub fn routes() -> Router<Arc<AdminState>> {
    Router::new().route("/v1/token", post(exchange))
}

/// A successful exchange (RFC 8693 section 2.2.1).
#[derive(Debug, Serialize, Deserialize)]
pub struct Issued {
    pub access_token: String,
    pub issued_token_type: String,
    pub token_type: String,
    pub expires_in: u64,
}

/// An error answer (RFC 6749 section 5.2); a pending one names its request.
struct OauthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    /// For `authorization_pending`: the approval request to ask about, and how long it waits.
    pending: Option<(String, u64)>,
}

impl IntoResponse for OauthError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "error": self.error,
            "error_description": self.description,
        });
        if let Some((id, expires_in)) = self.pending {
            body["request_id"] = id.into();
            body["expires_in"] = expires_in.into();
        }
        (self.status, Json(body)).into_response()
    }
}

impl OauthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        OauthError {
            status,
            error,
            description: description.into(),
            pending: None,
        }
    }
}

fn invalid_request(description: impl Into<String>) -> OauthError {
    OauthError::new(StatusCode::BAD_REQUEST, "invalid_request", description)
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
                approval: field("request_id").map(str::to_owned),
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

/// What a well-formed request asks for.
struct Asked<'a> {
    subject_token: &'a str,
    actor_token: Option<&'a str>,
    /// Required for a new request; a poll may leave it out.
    database: String,
    /// Required for a new request.
    reason: String,
    requested: Duration,
    scope: Option<Vec<&'a str>>,
    /// Asking again about a request waiting for approval.
    request_id: Option<&'a str>,
    /// How long this call may wait for a decision.
    wait: Duration,
}

/// Reads the form's fields; an error is the answer to a malformed request.
fn read_request<'a>(field: &impl Fn(&str) -> Option<&'a str>) -> Result<Asked<'a>, OauthError> {
    let grant_type = field("grant_type").unwrap_or_default();
    if grant_type != GRANT_TYPE {
        return Err(OauthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("grant_type must be {GRANT_TYPE}"),
        ));
    }
    let token_of_type = |token: &str, kind: &str| -> Result<Option<&'a str>, OauthError> {
        let Some(value) = field(token).filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        if !TOKEN_TYPES.contains(&field(kind).unwrap_or_default()) {
            return Err(invalid_request(format!(
                "{kind} must be one of {}",
                TOKEN_TYPES.join(", ")
            )));
        }
        Ok(Some(value))
    };
    let subject_token = token_of_type("subject_token", "subject_token_type")?
        .ok_or_else(|| invalid_request("subject_token is required"))?;
    let actor_token = token_of_type("actor_token", "actor_token_type")?;
    let request_id = field("request_id").filter(|id| !id.is_empty());
    let database = field("audience").unwrap_or_default().to_owned();
    if database.is_empty() && request_id.is_none() {
        return Err(invalid_request("audience (the database) is required"));
    }
    let reason = field("reason").map(str::trim).unwrap_or_default();
    if reason.is_empty() && request_id.is_none() {
        return Err(invalid_request(
            "reason is required: say why access is needed",
        ));
    }
    let reason: String = reason.chars().take(MAX_REASON).collect();
    let seconds = |name: &str| -> Result<Option<u64>, OauthError> {
        field(name)
            .map(|s| {
                s.parse::<u64>().map_err(|_| {
                    invalid_request(format!("{name} must be a whole number of seconds"))
                })
            })
            .transpose()
    };
    let requested = match seconds("expires_in")? {
        None => DEFAULT_LIFETIME,
        Some(0) => return Err(invalid_request("expires_in must be more than 0 seconds")),
        Some(s) => Duration::from_secs(s),
    };
    let wait = Duration::from_secs(seconds("wait")?.unwrap_or(0)).min(MAX_WAIT);
    Ok(Asked {
        subject_token,
        actor_token,
        database,
        reason,
        requested,
        scope: field("scope").map(|s| s.split_whitespace().collect()),
        request_id,
        wait,
    })
}
