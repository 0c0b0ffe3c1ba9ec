//! Approvers sign in to the approvals page through an OpenID Connect provider
//! (`[admin.sign_in]`): the authorization code flow with PKCE (S256), `state` bound to the
//! browser by a cookie and `nonce` checked in the ID token, which is verified as any token of
//! that `[[identity.issuers]]` entry is (its keys and algorithms, `aud` = this gateway's client
//! id, its `subjects`, its principal template and `allowed_groups`). The session is a random id
//! in a cookie that is `HttpOnly`, `Secure` and `SameSite=Strict`; every change made with it
//! carries the session's CSRF token in a header no other site can set. Sign-ins, refused ones
//! included, are recorded in the audit log.

mod provider;
pub mod service;
pub mod sessions;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::state::AdminState;
use sessions::{SESSION_COOKIE, SIGN_IN_COOKIE, Session, cookie};

pub fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/approvals/sign-in", get(start))
        .route(crate::config::CALLBACK_PATH, get(callback))
        .route("/approvals/sign-out", post(sign_out))
        .route("/v1/session", get(whoami))
}

fn not_configured() -> Response {
    (StatusCode::NOT_FOUND, "sign-in is not configured here\n").into_response()
}

/// A cookie for the admin listener: never readable by scripts, never sent over plain http
/// (browsers treat loopback as secure), `SameSite` as given.
fn set_cookie(name: &str, value: &str, path: &str, max_age: u64, same_site: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; Secure; SameSite={same_site}"
    ))
    .expect("cookie values are URL-safe base64")
}

/// `GET /approvals/sign-in`: off to the provider.
async fn start(State(state): State<Arc<AdminState>>) -> Response {
    let Some(sign_in) = &state.sign_in else {
        return not_configured();
    };
    let provider = match sign_in.provider().await {
        Ok(provider) => provider,
        Err(why) => {
            tracing::warn!(%why, "sign-in provider unavailable");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the sign-in provider cannot be reached: {why}\n"),
            )
                .into_response();
        }
    };
    let started = sign_in.sessions.start();
    let mut url = provider.authorization.clone();
    let mut scopes = vec!["openid".to_owned()];
    scopes.extend(
        sign_in
            .config
            .scopes
            .iter()
            .filter(|s| *s != "openid")
            .cloned(),
    );
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &sign_in.client_id)
        .append_pair("redirect_uri", sign_in.config.redirect_url.as_str())
        .append_pair("scope", &scopes.join(" "))
        .append_pair("state", &started.state)
        .append_pair("nonce", &started.nonce)
        .append_pair("code_challenge", &started.challenge)
        .append_pair("code_challenge_method", "S256");
    let mut headers = HeaderMap::new();
    // Lax, not Strict: it must come back with the provider's top-level redirect.
    headers.insert(
        header::SET_COOKIE,
        set_cookie(
            SIGN_IN_COOKIE,
            &started.cookie,
            crate::config::CALLBACK_PATH,
            600,
            "Lax",
        ),
    );
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(url.as_str()).expect("a URL is a header value"),
    );
    (StatusCode::FOUND, headers).into_response()
}

/// `GET /approvals/callback`: the provider's answer.
async fn callback(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let field = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let Some(sign_in) = &state.sign_in else {
        return not_configured();
    };
    let refuse = |why: String| {
        tracing::info!(%why, "approver sign-in refused");
        sign_in.record(None, &[], "refused", Some(why.clone()));
        (StatusCode::FORBIDDEN, format!("sign-in refused: {why}\n")).into_response()
    };
    if let Some(error) = field("error") {
        return refuse(format!("the provider answered {error}"));
    }
    let (Some(code), Some(state_value)) = (field("code"), field("state")) else {
        return refuse("no code or state".into());
    };
    // The state must be the one this browser was sent off with, in the cookie this gateway
    // gave it.
    let Some(progress) =
        cookie(&headers, SIGN_IN_COOKIE).and_then(|c| sign_in.sessions.finish(c, &state_value))
    else {
        return refuse("the sign-in was not started in this browser, or is too old".into());
    };
    let provider = match sign_in.provider().await {
        Ok(provider) => provider,
        Err(why) => return refuse(why),
    };
    let id_token = match provider
        .redeem(
            &code,
            &progress.verifier,
            &sign_in.config.redirect_url,
            (&sign_in.client_id, sign_in.secret.as_deref()),
            &sign_in.tls,
        )
        .await
    {
        Ok(token) => token,
        Err(why) => return refuse(why),
    };
    let (issuer, identity) = match sign_in.issuers.verify(&id_token).await {
        Ok(verified) => verified,
        Err(e) => return refuse(format!("the ID token was not accepted: {}", e.class())),
    };
    if issuer.config.name != sign_in.config.issuer {
        return refuse(format!("the ID token is from {}", issuer.config.name));
    }
    if identity.claims.get("nonce").and_then(|n| n.as_str()) != Some(progress.nonce.as_str()) {
        return refuse("the ID token's nonce is not this sign-in's".into());
    }
    if !issuer.allows(&identity.principal) {
        sign_in.record(
            Some(&identity.principal),
            &identity.groups,
            "refused",
            Some("not among the issuer's subjects".into()),
        );
        return (
            StatusCode::FORBIDDEN,
            format!(
                "sign-in refused: {} may not sign in here\n",
                identity.principal
            ),
        )
            .into_response();
    }
    let session = Session {
        subject: identity.principal.clone(),
        groups: identity.groups.clone(),
        issuer: identity.issuer.clone(),
        csrf: sessions::random(),
        expires: Instant::now() + sign_in.config.session_ttl,
    };
    let id = sign_in.sessions.open(session);
    tracing::info!(subject = %identity.principal, groups = ?identity.groups, "approver signed in");
    sign_in.record(
        Some(&identity.principal),
        &identity.groups,
        "signed_in",
        None,
    );
    let mut headers = HeaderMap::new();
    headers.append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            &id,
            "/",
            sign_in.config.session_ttl.as_secs(),
            "Strict",
        ),
    );
    headers.append(
        header::SET_COOKIE,
        set_cookie(SIGN_IN_COOKIE, "", crate::config::CALLBACK_PATH, 0, "Lax"),
    );
    // A page of our own that moves on, rather than a redirect: the navigation to the queue
    // then starts on this site, so the Strict cookie goes with it.
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    (
        StatusCode::OK,
        headers,
        "<!doctype html><meta http-equiv=\"refresh\" content=\"0;url=/approvals\"><a href=\"/approvals\">Continue to the approvals</a>\n",
    )
        .into_response()
}

/// `GET /v1/session`: who is signed in, and the CSRF token the page sends with changes.
async fn whoami(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    let Some(sign_in) = &state.sign_in else {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(
                serde_json::json!({"error": "sign-in is not configured here", "sign_in": null}),
            ),
        )
            .into_response();
    };
    match sign_in.session(&headers, false) {
        Ok(Some(session)) => axum::Json(serde_json::json!({
            "subject": session.subject,
            "groups": session.groups,
            "csrf": session.csrf,
            "expires_in": session.expires.saturating_duration_since(Instant::now()).as_secs(),
        }))
        .into_response(),
        Ok(None) | Err(_) => (
            StatusCode::UNAUTHORIZED,
            axum::Json(
                serde_json::json!({"error": "not signed in", "sign_in": "/approvals/sign-in"}),
            ),
        )
            .into_response(),
    }
}

/// `POST /approvals/sign-out` (with the CSRF header).
async fn sign_out(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    let Some(sign_in) = &state.sign_in else {
        return not_configured();
    };
    match sign_in.session(&headers, true) {
        Ok(Some(_)) => {
            if let Some(id) = cookie(&headers, SESSION_COOKIE) {
                sign_in.sessions.close(id);
            }
            let mut headers = HeaderMap::new();
            headers.insert(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, "", "/", 0, "Strict"),
            );
            (StatusCode::NO_CONTENT, headers).into_response()
        }
        Ok(None) => (StatusCode::UNAUTHORIZED, "not signed in\n").into_response(),
        Err(why) => (StatusCode::FORBIDDEN, format!("{why}\n")).into_response(),
    }
}
