//! Who calls: every MCP request carries a bearer token, a Sluice token or (where its issuer
//! allows direct use, `direct_login`) a trusted issuer's own. Anything else, or a token that
//! is expired, for another audience or revoked, is answered 401 with a `WWW-Authenticate`
//! challenge naming the protected resource metadata (RFC 9728, as the MCP specification's
//! authorization asks). The token then logs the caller's database session in, where the
//! gateway checks it again as it checks psql's password.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::sessions::Caller;
use super::state::GatewayParts;
use super::state::McpState;

/// Why a token was not taken: the RFC 6750 error, a description for the challenge, and the
/// class the audit log records.
struct Refused {
    error: Option<&'static str>,
    description: String,
    class: String,
}

fn invalid(class: &str, description: impl Into<String>) -> Refused {
    Refused {
        error: Some("invalid_token"),
        description: description.into(),
        class: class.to_owned(),
    }
}

impl GatewayParts {
    /// The caller `token` proves, for a request that named `database` (`?database=`), or why
    /// not.
    async fn caller(
        &self,
        token: &str,
        database: Option<&str>,
        addr: String,
    ) -> Result<Caller, Refused> {
        let token_digest = digest(token);
        let claims = match self.verified.get(&token_digest) {
            Some(claims) => claims,
            None => match self.tokens.verify(token) {
                Ok(claims) => {
                    self.verified.insert(token_digest.clone(), &claims);
                    claims
                }
                Err(e) => return self.external(token, database, addr, e.class()).await,
            },
        };
        if let Some(revocation) = self.revocations.matching_claims(&claims) {
            return Err(invalid("revoked", format!("revoked ({})", revocation.id)));
        }
        if database.is_some_and(|d| d != claims.db) {
            return Err(invalid(
                "wrong_database",
                format!("the token is for database {}", claims.db),
            ));
        }
        Ok(Caller {
            token: token.to_owned(),
            token_digest,
            subject: claims.sub,
            database: claims.db,
            read_only: claims.read_only,
            addr,
        })
    }

    /// A trusted issuer's own token, where the issuer lets its tokens log in as they are.
    /// What it may do is decided when its session logs in (access plugins, the issuer's
    /// databases), as for psql; here only who it is.
    async fn external(
        &self,
        token: &str,
        database: Option<&str>,
        addr: String,
        sluice_refusal: &str,
    ) -> Result<Caller, Refused> {
        let Some(named) = self.issuers.named_by(token) else {
            return Err(invalid(sluice_refusal, sluice_refusal.replace('_', " ")));
        };
        if !named.config.direct_login {
            return Err(invalid(
                "exchange_required",
                format!(
                    "tokens of issuer {} are exchanged first (POST /v1/token)",
                    named.config.name
                ),
            ));
        }
        let (issuer, identity) = self
            .issuers
            .verify(token)
            .await
            .map_err(|e| invalid(e.class(), e.class().replace('_', " ")))?;
        if let Some(revocation) = self.revocations.matching_token(
            &[identity.token_id.as_deref()],
            &[Some(identity.principal.as_str())],
            &[Some(identity.issuer.as_str())],
        ) {
            return Err(invalid("revoked", format!("revoked ({})", revocation.id)));
        }
        // The database: named by the request, or the issuer's only one.
        let database = match (database, issuer.config.databases.as_slice()) {
            (Some(d), _) => d.to_owned(),
            (None, [only]) => only.clone(),
            (None, _) => {
                return Err(Refused {
                    error: Some("invalid_request"),
                    description: "name the database: /mcp?database=NAME".into(),
                    class: "no_database".into(),
                });
            }
        };
        Ok(Caller {
            token: token.to_owned(),
            token_digest: digest(token),
            subject: identity.principal,
            database,
            read_only: issuer.config.read_only,
            addr,
        })
    }
}

fn digest(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    crate::audit::record::hex(digest.as_ref())
}

/// The MCP session header.
const SESSION_ID: &str = "mcp-session-id";

/// The middleware: a request with a token that proves a caller goes on with it (in its
/// extensions); anything else is 401 with the challenge. A request naming an MCP session must
/// come with the token that opened it: for any other, the session does not exist (404, what
/// the transport answers for an unknown session).
pub async fn authenticate(
    State(state): State<Arc<McpState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme is case-insensitive (RFC 9110).
            let (scheme, token) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
    let database = request.uri().query().and_then(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "database")
            .map(|(_, value)| value.into_owned())
    });
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let addr = peer.map(|p| p.to_string()).unwrap_or_default();
    // A database name is an identifier: NAMEDATALEN - 1 bytes at most.
    if database
        .as_ref()
        .is_some_and(|d| d.is_empty() || d.len() > 63)
    {
        return (StatusCode::BAD_REQUEST, "?database= names a database\n").into_response();
    }
    let (addr_for_audit, database_for_audit) = (addr.clone(), database.clone());
    let caller = match token {
        None => Err(Refused {
            error: None,
            description: "a Sluice token is required".into(),
            class: String::new(),
        }),
        Some(token) => {
            state
                .gateway
                .caller(&token, database.as_deref(), addr)
                .await
        }
    };
    match caller {
        Ok(caller) => {
            let named = request
                .headers()
                .get(SESSION_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if let Some(id) = &named
                && !state.sessions.owned_by(id, &caller.token_digest)
            {
                return (StatusCode::NOT_FOUND, "no such MCP session\n").into_response();
            }
            // A request without a session may open one (initialize): a token holds a few.
            if named.is_none() && !state.sessions.may_open(&caller.token_digest) {
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    "this token holds as many MCP sessions as it may: end one (DELETE) first\n",
                )
                    .into_response();
            }
            let digest = caller.token_digest.clone();
            let ending = request.method() == axum::http::Method::DELETE;
            request.extensions_mut().insert(caller);
            let response = next.run(request).await;
            // The client ended its session: its database sessions end with it.
            if let Some(id) = named.as_deref().filter(|_| ending)
                && response.status().is_success()
            {
                state.sessions.end_mcp_session(id);
            }
            // A session opened (initialize): it is this token's.
            if named.is_none()
                && let Some(id) = response
                    .headers()
                    .get(SESSION_ID)
                    .and_then(|v| v.to_str().ok())
            {
                state.sessions.own(id, &digest);
            }
            response
        }
        Err(refused) => {
            tracing::info!(why = %refused.description, "MCP request refused");
            // A request without a token is how a client discovers where to get one; a token
            // refused is a failed login.
            let admitted = match (refused.error, peer) {
                (Some(_), Some(peer)) => state.gateway.refusals.admit(peer.ip()),
                _ => None,
            };
            if let Some(unrecorded) = admitted {
                state
                    .gateway
                    .audit
                    .record(crate::audit::Event::LoginFailure {
                        client_addr: addr_for_audit,
                        user: None,
                        database: database_for_audit,
                        reason: refused.class.clone(),
                        via: Some(super::client::VIA),
                        unrecorded: (unrecorded > 0).then_some(unrecorded),
                    });
            }
            challenge(&state, refused)
        }
    }
}

fn challenge(state: &McpState, refused: Refused) -> Response {
    let mut value = format!("Bearer resource_metadata=\"{}\"", state.metadata_url());
    if let Some(error) = refused.error {
        // Descriptions are ours: no quote or backslash to escape.
        let description = refused.description.replace(['"', '\\'], "'");
        value.push_str(&format!(
            ", error=\"{error}\", error_description=\"{description}\""
        ));
    }
    let status = match refused.error {
        Some("invalid_request") => StatusCode::BAD_REQUEST,
        _ => StatusCode::UNAUTHORIZED,
    };
    let mut response = (status, format!("{}\n", refused.description)).into_response();
    if let Ok(value) = HeaderValue::from_str(&value) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}
