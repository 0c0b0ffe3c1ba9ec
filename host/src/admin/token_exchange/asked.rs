//! Reading a request's form: what it asks for, or why it is malformed.

use std::time::Duration;

use axum::http::StatusCode;

use super::answer::{GRANT_TYPE, JWT, OauthError, invalid_request};

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
pub(super) const MAX_REASON: usize = 1000;

/// What a well-formed request asks for.
pub(super) struct Asked<'a> {
    pub subject_token: &'a str,
    pub actor_token: Option<&'a str>,
    /// Required for a new request; a poll may leave it out.
    pub database: String,
    /// Required for a new request.
    pub reason: String,
    pub requested: Duration,
    pub scope: Option<Vec<&'a str>>,
    /// Asking again about a request waiting for approval.
    pub request_id: Option<&'a str>,
    /// How long this call may wait for a decision.
    pub wait: Duration,
}

/// Reads the form's fields; an error is the answer to a malformed request.
pub(super) fn read_request<'a>(
    field: &impl Fn(&str) -> Option<&'a str>,
) -> Result<Asked<'a>, OauthError> {
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
