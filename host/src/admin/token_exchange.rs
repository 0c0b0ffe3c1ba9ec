//! `POST /v1/token`: OAuth 2.0 Token Exchange (RFC 8693). A workload (or person) sends the
//! token its platform gave it, names one database (`audience`) and says why (`reason`), and
//! gets a short-lived gateway token for it, if its issuer is trusted
//! (`[[identity.issuers]]`), its principal is among the issuer's `subjects`, the database among
//! its `databases`, and nothing about it is revoked. The lifetime asked for (`expires_in`,
//! seconds; default 15 minutes) is capped by the issuer's `max_ttl` and `identity.max_ttl`.
//! Every request is recorded in the audit log, issued, denied or refused.

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

use super::state::{AdminState, ExchangeApi};
use crate::audit::Event;
use crate::metrics::ExchangeLabels;

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// Subject token types accepted: all are JWTs here.
const SUBJECT_TOKEN_TYPES: &[&str] = &[
    JWT,
    "urn:ietf:params:oauth:token-type:id_token",
    "urn:ietf:params:oauth:token-type:access_token",
];
/// The lifetime issued when none is asked for.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(15 * 60);
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

/// An error answer (RFC 6749 section 5.2).
struct OauthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl IntoResponse for OauthError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": self.error,
            "error_description": self.description,
        });
        (self.status, Json(body)).into_response()
    }
}

fn invalid_request(description: impl Into<String>) -> OauthError {
    OauthError {
        status: StatusCode::BAD_REQUEST,
        error: "invalid_request",
        description: description.into(),
    }
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
            });
            return Err(e.into_response());
        }
    };
    let Asked {
        subject_token,
        database,
        reason,
        requested,
        requested_groups,
    } = asked;
    decide(
        api,
        subject_token,
        database,
        reason,
        requested,
        requested_groups,
    )
    .await
    .map(Json)
    .map_err(IntoResponse::into_response)
}

/// What a well-formed request asks for.
struct Asked<'a> {
    subject_token: &'a str,
    database: String,
    reason: String,
    requested: Duration,
    requested_groups: Option<Vec<&'a str>>,
}

/// Reads the form's fields; an error is the answer to a malformed request.
fn read_request<'a>(field: &impl Fn(&str) -> Option<&'a str>) -> Result<Asked<'a>, OauthError> {
    let grant_type = field("grant_type").unwrap_or_default();
    if grant_type != GRANT_TYPE {
        return Err(OauthError {
            status: StatusCode::BAD_REQUEST,
            error: "unsupported_grant_type",
            description: format!("grant_type must be {GRANT_TYPE}"),
        });
    }
    let subject_token = field("subject_token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| invalid_request("subject_token is required"))?;
    if !SUBJECT_TOKEN_TYPES.contains(&field("subject_token_type").unwrap_or_default()) {
        return Err(invalid_request(format!(
            "subject_token_type must be one of {}",
            SUBJECT_TOKEN_TYPES.join(", ")
        )));
    }
    if field("actor_token").is_some() {
        return Err(invalid_request("actor_token is not supported yet"));
    }
    let database = field("audience")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| invalid_request("audience (the database) is required"))?
        .to_owned();
    let reason = field("reason").map(str::trim).unwrap_or_default();
    if reason.is_empty() {
        return Err(invalid_request(
            "reason is required: say why access is needed",
        ));
    }
    let reason: String = reason.chars().take(MAX_REASON).collect();
    let requested = match field("expires_in") {
        None => DEFAULT_LIFETIME,
        Some(seconds) => match seconds.parse::<u64>() {
            Ok(s) if s > 0 => Duration::from_secs(s),
            _ => {
                return Err(invalid_request(
                    "expires_in must be a positive number of seconds",
                ));
            }
        },
    };
    let requested_groups: Option<Vec<&str>> =
        field("scope").map(|s| s.split_whitespace().collect());
    Ok(Asked {
        subject_token,
        database,
        reason,
        requested,
        requested_groups,
    })
}

async fn decide(
    api: &ExchangeApi,
    subject_token: &str,
    database: String,
    reason: String,
    requested: Duration,
    requested_groups: Option<Vec<&str>>,
) -> Result<Issued, OauthError> {
    let record = |issuer: Option<&str>,
                  principal: Option<&str>,
                  outcome: &'static str,
                  why: Option<String>,
                  issued: Option<(&str, u64)>,
                  groups: &[String]| {
        api.audit.record(Event::TokenExchange {
            issuer: issuer.map(str::to_owned),
            principal: principal.map(str::to_owned),
            database: database.clone(),
            reason: reason.clone(),
            outcome,
            why,
            token_id: issued.map(|(jti, _)| jti.to_owned()),
            ttl_seconds: issued.map(|(_, ttl)| ttl),
            groups: groups.to_vec(),
        });
        api.metrics
            .token_exchanges
            .get_or_create(&ExchangeLabels {
                issuer: issuer.unwrap_or("-").to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    };
    let (issuer, identity) = match api.issuers.verify(subject_token).await {
        Ok(verified) => verified,
        Err(e) => {
            tracing::info!(reason = e.class(), error = %e, "token exchange refused a subject token");
            record(None, None, "refused", Some(e.class().to_owned()), None, &[]);
            return Err(OauthError {
                status: StatusCode::BAD_REQUEST,
                error: "invalid_grant",
                description: "the subject token was not accepted".into(),
            });
        }
    };
    let name = identity.issuer_name.as_str();
    let principal = identity.principal.as_str();
    let deny = |why: String| {
        tracing::info!(issuer = name, principal, %why, "token exchange denied");
        record(
            Some(name),
            Some(principal),
            "denied",
            Some(why.clone()),
            None,
            &[],
        );
        OauthError {
            status: StatusCode::FORBIDDEN,
            error: "access_denied",
            description: why,
        }
    };
    if !issuer.allows(principal) {
        return Err(deny(format!(
            "{principal} is not among the subjects issuer \"{name}\" may ask for"
        )));
    }
    if !issuer.config.databases.contains(&database) {
        return Err(deny(format!(
            "principals of issuer \"{name}\" may not ask for database \"{database}\""
        )));
    }
    if let Some(revocation) = api.revocations.matching_token(
        &[identity.token_id.as_deref()],
        principal,
        &[Some(identity.issuer.as_str())],
    ) {
        return Err(deny(format!("revoked ({})", revocation.id)));
    }
    let groups: Vec<String> = match &requested_groups {
        // Only groups the token carries can be asked for.
        Some(asked) => {
            if let Some(missing) = asked
                .iter()
                .find(|g| !identity.groups.iter().any(|h| h == *g))
            {
                return Err(deny(format!(
                    "the token does not carry group \"{missing}\""
                )));
            }
            asked.iter().map(|g| (*g).to_owned()).collect()
        }
        None => identity.groups.clone(),
    };
    let cap = issuer
        .config
        .max_ttl
        .unwrap_or(api.max_ttl)
        .min(api.max_ttl);
    // Never longer than the proof it was issued for.
    let left = Duration::from_secs(identity.expires.saturating_sub(crate::identity::unix_now()));
    let ttl = requested.min(cap).min(left);
    if ttl.is_zero() {
        return Err(deny("the subject token has expired".into()));
    }
    let (token, claims) = api
        .tokens
        .mint_exchanged(
            principal,
            &database,
            &groups,
            ttl,
            (&identity.issuer, identity.token_id.as_deref()),
            issuer.config.read_only,
        )
        .map_err(|e| OauthError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "server_error",
            description: e.to_string(),
        })?;
    tracing::info!(issuer = name, principal, %database, ttl = ?ttl, token_id = %claims.jti, "token issued in exchange");
    record(
        Some(name),
        Some(principal),
        "issued",
        None,
        Some((&claims.jti, ttl.as_secs())),
        &groups,
    );
    Ok(Issued {
        access_token: token,
        issued_token_type: JWT.to_owned(),
        token_type: "N_A".to_owned(),
        expires_in: ttl.as_secs(),
    })
}
