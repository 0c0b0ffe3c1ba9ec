//! What the exchange answers: an issued token (RFC 8693 section 2.2.1), or an OAuth error
//! (RFC 6749 section 5.2), a pending one naming its request (RFC 8628's codes).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// The error code of an answer that is not ready: the request waits for approval (RFC 8628).
pub const PENDING: &str = "authorization_pending";

/// A successful exchange (RFC 8693 section 2.2.1).
#[derive(Debug, Serialize, Deserialize)]
pub struct Issued {
    pub access_token: String,
    pub issued_token_type: String,
    pub token_type: String,
    pub expires_in: u64,
}

/// An error answer (RFC 6749 section 5.2); a pending one names its request.
pub(super) struct OauthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    /// For `authorization_pending`: the `request_id` to ask again with (the approval's id and
    /// the requester's secret), the approval's id as approvers see it, and how long it waits.
    pub pending: Option<(String, String, u64)>,
}

impl IntoResponse for OauthError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "error": self.error,
            "error_description": self.description,
        });
        if let Some((handle, id, expires_in)) = self.pending {
            body["request_id"] = handle.into();
            body["approval_id"] = id.into();
            body["expires_in"] = expires_in.into();
        }
        (self.status, Json(body)).into_response()
    }
}

impl OauthError {
    pub fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        OauthError {
            status,
            error,
            description: description.into(),
            pending: None,
        }
    }
}

pub(super) fn invalid_request(description: impl Into<String>) -> OauthError {
    OauthError::new(StatusCode::BAD_REQUEST, "invalid_request", description)
}
