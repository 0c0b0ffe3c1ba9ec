//! Who calls the admin API: every call but health, readiness and metrics carries a Sluice
//! token (`Authorization: Bearer ...`), checked like a login's (signature, issuer, audience,
//! validity) and against the revocations, or comes from the approvals page of an approver
//! signed in through the OIDC provider (a session cookie, and for a change the session's CSRF
//! token); errors are answered as JSON.

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::sign_in::service::SessionRefused;
use crate::identity::{Claims, TokenAuthority};
use crate::revocations::Revocations;

/// An error as JSON `{"error": "..."}` with its status code.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// Who is calling, by token or by sign-in.
#[derive(Debug, Clone)]
pub struct Caller {
    pub subject: String,
    pub groups: Vec<String>,
}

/// The caller: by the bearer token when there is one, else by the sign-in session cookie (a
/// change, `writes`, also needs the session's CSRF header). 401 without either, or with a
/// token or session that is refused, ended or revoked.
pub fn caller(
    tokens: &TokenAuthority,
    revocations: &Revocations,
    sign_in: Option<&super::sign_in::service::SignIn>,
    headers: &HeaderMap,
    writes: bool,
) -> Result<Caller, ApiError> {
    let unauthorized = |m: &str| ApiError(StatusCode::UNAUTHORIZED, m.to_owned());
    if headers.contains_key(axum::http::header::AUTHORIZATION) {
        let claims = bearer(tokens, revocations, headers)?;
        return Ok(Caller {
            subject: claims.sub,
            groups: claims.groups,
        });
    }
    let session = match sign_in.map(|s| s.session(headers, writes)) {
        Some(Ok(Some(session))) => session,
        Some(Err(why @ SessionRefused::NoCsrf)) => {
            return Err(ApiError(StatusCode::FORBIDDEN, why.to_string()));
        }
        Some(Err(why @ SessionRefused::Ended)) => return Err(unauthorized(&why.to_string())),
        Some(Ok(None)) | None => {
            return Err(unauthorized(
                "a token is required (Authorization: Bearer ...), or sign in",
            ));
        }
    };
    if let Some(revocation) =
        revocations.matching_token(&[], &[Some(&session.subject)], &[Some(&session.issuer)])
    {
        tracing::info!(revocation = %revocation.id, "admin API call from a revoked sign-in");
        return Err(unauthorized("the signed-in identity was revoked"));
    }
    Ok(Caller {
        subject: session.subject,
        groups: session.groups,
    })
}

/// The claims of the caller's token; 401 without a token, or with one that is refused or
/// revoked.
fn bearer(
    tokens: &TokenAuthority,
    revocations: &Revocations,
    headers: &HeaderMap,
) -> Result<Claims, ApiError> {
    let unauthorized = |m: &str| ApiError(StatusCode::UNAUTHORIZED, m.to_owned());
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("a token is required (Authorization: Bearer ...)"))?;
    let claims = tokens.verify(token.trim()).map_err(|e| {
        tracing::info!(reason = e.class(), "admin API call with a refused token");
        unauthorized("the token was refused")
    })?;
    if let Some(revocation) = revocations.matching_claims(&claims) {
        tracing::info!(revocation = %revocation.id, "admin API call with a revoked token");
        return Err(unauthorized("the token was revoked"));
    }
    // Deciding and revoking are a person's acts, done as themselves: a token the exchange
    // issued (for a database; an agent holding someone's provider token could get one without
    // `act`) may not do either. People sign in to the page or use an operator-minted token.
    if claims.idp.is_some() || claims.act.is_some() {
        tracing::info!(subject = %claims.sub, idp = ?claims.idp, "admin API call with an exchanged token");
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "a token issued by the token exchange may not use the admin API: sign in, or use an operator's token".into(),
        ));
    }
    Ok(claims)
}
