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

use super::McpState;
use super::sessions::Caller;
use crate::identity::TokenAuthority;
use crate::identity::external::TrustedIssuers;
use crate::revocations::Revocations;

/// What checks a caller's token.
pub struct Verifiers {
    pub tokens: Arc<TokenAuthority>,
    pub issuers: Arc<TrustedIssuers>,
    pub revocations: Arc<Revocations>,
}

impl Verifiers {
    pub fn of(services: &crate::services::Services) -> Verifiers {
        Verifiers {
            tokens: services.tokens.clone(),
            issuers: services.issuers.clone(),
            revocations: services.revocations.clone(),
        }
    }
}

/// Why a token was not taken: the RFC 6750 error and a description for the challenge.
struct Refused {
    error: Option<&'static str>,
    description: String,
}

fn invalid(description: impl Into<String>) -> Refused {
    Refused {
        error: Some("invalid_token"),
        description: description.into(),
    }
}

impl Verifiers {
    /// The caller `token` proves, for a request that named `database` (`?database=`), or why
    /// not.
    async fn caller(
        &self,
        token: &str,
        database: Option<&str>,
        addr: String,
    ) -> Result<Caller, Refused> {
        let claims = match self.tokens.verify(token) {
            Ok(claims) => claims,
            Err(e) => return self.external(token, database, addr, e.class()).await,
        };
        if let Some(revocation) = self.revocations.matching_claims(&claims) {
            return Err(invalid(format!("revoked ({})", revocation.id)));
        }
        if database.is_some_and(|d| d != claims.db) {
            return Err(invalid(format!("the token is for database {}", claims.db)));
        }
        Ok(Caller {
            token: token.to_owned(),
            subject: claims.sub,
            database: claims.db,
            token_id: claims.jti,
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
            return Err(invalid(sluice_refusal.replace('_', " ")));
        };
        if !named.config.direct_login {
            return Err(invalid(format!(
                "tokens of issuer {} are exchanged first (POST /v1/token)",
                named.config.name
            )));
        }
        let (issuer, identity) = self
            .issuers
            .verify(token)
            .await
            .map_err(|e| invalid(e.class().replace('_', " ")))?;
        if let Some(revocation) = self.revocations.matching_token(
            &[identity.token_id.as_deref()],
            &[Some(identity.principal.as_str())],
            &[Some(identity.issuer.as_str())],
        ) {
            return Err(invalid(format!("revoked ({})", revocation.id)));
        }
        // The database: named by the request, or the issuer's only one.
        let database = match (database, issuer.config.databases.as_slice()) {
            (Some(d), _) => d.to_owned(),
            (None, [only]) => only.clone(),
            (None, _) => {
                return Err(Refused {
                    error: Some("invalid_request"),
                    description: "name the database: /mcp?database=NAME".into(),
                });
            }
        };
        let token_id = identity.token_id.clone().unwrap_or_else(|| {
            let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
            format!(
                "sha256:{}",
                &crate::audit::record::hex(digest.as_ref())[..32]
            )
        });
        Ok(Caller {
            token: token.to_owned(),
            subject: identity.principal,
            database,
            token_id,
            read_only: issuer.config.read_only,
            addr,
        })
    }
}

/// The middleware: a request with a token that proves a caller goes on with it (in its
/// extensions); anything else is 401 with the challenge.
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
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_owned());
    let database = request.uri().query().and_then(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "database")
            .map(|(_, value)| value.into_owned())
    });
    let addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.to_string())
        .unwrap_or_default();
    let caller = match token {
        None => Err(Refused {
            error: None,
            description: "a Sluice token is required".into(),
        }),
        Some(token) => {
            state
                .verifiers
                .caller(&token, database.as_deref(), addr)
                .await
        }
    };
    match caller {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(refused) => {
            tracing::info!(why = %refused.description, "MCP request refused");
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
