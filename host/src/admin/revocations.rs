//! `/v1/revocations`: take tokens back and list what is revoked. Only callers whose token
//! carries one of `[admin] admin_groups` may; a revocation reaches every live session using a
//! matching token at once.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::{ApiError, caller};
use super::state::{AdminState, RevocationsApi};
use crate::state::{Revocation, Revoked};

pub fn routes() -> Router<Arc<AdminState>> {
    Router::new().route("/v1/revocations", get(list).post(revoke))
}

/// What to revoke: exactly one of `jti`, `subject`, `issuer`, and why.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    pub jti: Option<String>,
    pub subject: Option<String>,
    pub issuer: Option<String>,
    pub reason: String,
    /// How long it lasts (default: `identity.max_ttl`, the longest a token it matches may live).
    pub for_seconds: Option<u64>,
}

/// A revocation as the API shows it. Times are Unix seconds.
#[derive(Debug, Serialize, Deserialize)]
pub struct RevocationView {
    pub id: String,
    /// `jti`, `subject` or `issuer`.
    pub kind: String,
    pub value: String,
    pub by: String,
    pub reason: String,
    pub created: f64,
    pub until: f64,
}

impl From<Revocation> for RevocationView {
    fn from(r: Revocation) -> RevocationView {
        let seconds = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        };
        RevocationView {
            id: r.id,
            kind: r.revoked.kind().to_owned(),
            value: r.revoked.value().to_owned(),
            by: r.by,
            reason: r.reason,
            created: seconds(r.created),
            until: seconds(r.until),
        }
    }
}

/// The caller's subject, when their token carries an admin group.
fn admin(api: &RevocationsApi, headers: &HeaderMap, writes: bool) -> Result<String, ApiError> {
    let who = caller(
        &api.tokens,
        &api.revocations,
        api.sign_in.as_deref(),
        headers,
        writes,
    )?;
    if !who.groups.iter().any(|g| api.admin_groups.contains(g)) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "{} is not in an admin group ({})",
                who.subject,
                api.admin_groups.join(", ")
            ),
        ));
    }
    Ok(who.subject)
}

fn api(state: &AdminState) -> Result<&RevocationsApi, ApiError> {
    state.revocations.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "revocations are not served here".into(),
        )
    })
}

async fn list(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<RevocationView>>, ApiError> {
    let api = api(&state)?;
    admin(api, &headers, false)?;
    let list = api.revocations.list().into_iter().map(RevocationView::from);
    Ok(Json(list.collect()))
}

async fn revoke(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Json(body): Json<RevokeBody>,
) -> Result<(StatusCode, Json<RevocationView>), ApiError> {
    let api = api(&state)?;
    let by = admin(api, &headers, true)?;
    let bad = |m: &str| ApiError(StatusCode::BAD_REQUEST, m.to_owned());
    let revoked = match (body.jti, body.subject, body.issuer) {
        (Some(jti), None, None) => Revoked::Token(jti),
        (None, Some(subject), None) => Revoked::Subject(subject),
        (None, None, Some(issuer)) => Revoked::Issuer(issuer),
        _ => return Err(bad("name exactly one of jti, subject, issuer")),
    };
    if revoked.value().is_empty() {
        return Err(bad("the revoked value is empty"));
    }
    if let Revoked::Issuer(issuer) = &revoked
        && !api.issuers.contains(issuer)
    {
        return Err(bad(&format!(
            "no issuer {issuer}: name one exactly as its tokens' iss ({})",
            api.issuers.join(", ")
        )));
    }
    if body.reason.trim().is_empty() {
        return Err(bad("a reason is required"));
    }
    if body.for_seconds == Some(0) {
        return Err(bad("for_seconds must be more than 0"));
    }
    let lasts = body.for_seconds.map(Duration::from_secs);
    let revocation = api
        .revocations
        .revoke(revoked, &by, &body.reason, lasts)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "revocation not stored");
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the state store failed: {e}"),
            )
        })?;
    Ok((StatusCode::CREATED, Json(revocation.into())))
}
