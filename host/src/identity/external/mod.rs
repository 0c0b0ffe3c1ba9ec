//! Tokens from identity providers the gateway trusts (`[[identity.issuers]]`): GitHub Actions
//! OIDC, Kubernetes service accounts, SPIFFE JWT-SVIDs, people's OIDC logins. A token is
//! checked against the one issuer its `iss` names, with that issuer's keys only (a `kid` never
//! crosses issuers) and only with the algorithms configured for it: the header never chooses
//! (`none`, an HMAC algorithm, or any other is refused before a key is looked at), and keys or
//! URLs a token carries (`jwk`, `jku`, `x5u`) are never read. `exp`, `nbf` and `iat` are checked
//! with `identity.leeway`; `aud` must be the issuer's configured audience exactly.

mod error;
mod keys;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::principal::{PrincipalTemplate, claim, matches_pattern};
use crate::config::{IdentityConfig, IssuerConfig};
pub use error::{ExternalTokenError, MAX_TOKEN};
use keys::{KeyCache, KeySource};

/// Who an accepted external token says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// The issuer's configured name.
    pub issuer_name: String,
    /// Its `iss`.
    pub issuer: String,
    /// From the issuer's principal template.
    pub principal: String,
    pub groups: Vec<String>,
    /// The token's own `jti`, when it has one.
    pub token_id: Option<String>,
    /// Its `exp` (Unix seconds).
    pub expires: u64,
    /// Every claim of the verified token, for access plugins' rules.
    pub claims: Map<String, Value>,
}

/// One trusted issuer and what its principals may ask for.
pub struct TrustedIssuer {
    pub config: IssuerConfig,
    algorithms: Vec<Algorithm>,
    template: PrincipalTemplate,
    keys: KeyCache,
}

impl TrustedIssuer {
    /// Whether `principal` may ask at all.
    pub fn allows(&self, principal: &str) -> bool {
        self.config
            .subjects
            .iter()
            .any(|pattern| matches_pattern(pattern, principal))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("identity.issuers \"{issuer}\": {why}")]
pub struct IssuerSetupError {
    issuer: String,
    why: String,
}

/// The issuers of `[[identity.issuers]]`, by `iss`.
pub struct TrustedIssuers {
    by_issuer: HashMap<String, Arc<TrustedIssuer>>,
    leeway: Duration,
}

impl TrustedIssuers {
    pub fn from_config(
        identity: &IdentityConfig,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<TrustedIssuers, IssuerSetupError> {
        let mut by_issuer = HashMap::new();
        for config in &identity.issuers {
            let failed = |why: String| IssuerSetupError {
                issuer: config.name.clone(),
                why,
            };
            // Checked by the config's validation; repeated here so this never panics.
            let iss = config.issuer().ok_or_else(|| failed("no issuer".into()))?;
            let template = PrincipalTemplate::parse(config.principal()).map_err(failed)?;
            let algorithms = config
                .algorithms()
                .iter()
                .map(|a| a.parse::<Algorithm>().map_err(|e| failed(e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            let source = match (&config.jwks_url, &config.jwks_file) {
                (Some(url), _) => KeySource::Url(url.clone()),
                (None, Some(file)) => KeySource::File(file.clone()),
                (None, None) => KeySource::Discovery(
                    url::Url::parse(iss).map_err(|e| failed(format!("issuer {iss}: {e}")))?,
                ),
            };
            let tls = crate::web::client_tls(config.ca_file.as_deref())
                .map_err(|e| failed(e.to_string()))?;
            let keys = KeyCache::new(
                &config.name,
                source,
                tls,
                config.refetch_cooldown,
                config.max_stale,
                metrics.clone(),
            );
            by_issuer.insert(
                iss.to_owned(),
                Arc::new(TrustedIssuer {
                    config: config.clone(),
                    algorithms,
                    template,
                    keys,
                }),
            );
        }
        Ok(TrustedIssuers {
            by_issuer,
            leeway: identity.leeway,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.by_issuer.is_empty()
    }

    /// The trusted issuer `token` says it is from, before anything about it is checked: only
    /// to choose how a token is verified.
    pub fn named_by(&self, token: &str) -> Option<Arc<TrustedIssuer>> {
        if token.len() > MAX_TOKEN {
            return None;
        }
        let iss = unverified_issuer(token).ok()?;
        self.by_issuer.get(&iss).cloned()
    }

    /// Checks `token` against the issuer it names; returns that issuer and who the token is.
    pub async fn verify(
        &self,
        token: &str,
    ) -> Result<(Arc<TrustedIssuer>, ExternalIdentity), ExternalTokenError> {
        if token.len() > MAX_TOKEN {
            return Err(ExternalTokenError::TooLarge);
        }
        // `alg: none` and unknown algorithms fail here: the header cannot even be read.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| ExternalTokenError::Malformed(format!("header: {e}")))?;
        let iss = unverified_issuer(token)?;
        let issuer = self
            .by_issuer
            .get(&iss)
            .cloned()
            .ok_or(ExternalTokenError::UnknownIssuer(iss.clone()))?;
        if !issuer.algorithms.contains(&header.alg) {
            return Err(ExternalTokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let key = issuer.keys.key(header.kid.as_deref()).await?;
        if key.algorithm.is_some_and(|a| a != header.alg) {
            return Err(ExternalTokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.set_issuer(&[iss.as_str()]);
        validation.set_audience(&[issuer.config.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => ExternalTokenError::Expired,
                    ErrorKind::ImmatureSignature => ExternalTokenError::NotYetValid,
                    ErrorKind::InvalidAudience => ExternalTokenError::WrongAudience,
                    ErrorKind::InvalidAlgorithm => {
                        ExternalTokenError::Algorithm(format!("{:?}", header.alg))
                    }
                    ErrorKind::InvalidSignature => ExternalTokenError::BadSignature,
                    other => ExternalTokenError::Malformed(format!("{other:?}")),
                }
            })?;
        let claims = data.claims;
        // Required, so jsonwebtoken saw it: a time, checked against the clock there.
        let expires = time_claim(&claims, "exp")?.unwrap_or(0);
        // jsonwebtoken skips an `nbf` it cannot read, and knows nothing of `iat`.
        let soonest = crate::identity::token::unix_now().saturating_add(self.leeway.as_secs());
        if time_claim(&claims, "nbf")?.is_some_and(|nbf| nbf > soonest)
            || time_claim(&claims, "iat")?.is_some_and(|iat| iat > soonest)
        {
            return Err(ExternalTokenError::NotYetValid);
        }
        let principal = issuer
            .template
            .render(&claims)
            .map_err(ExternalTokenError::NoPrincipal)?;
        let groups = issuer
            .config
            .groups_claim
            .as_deref()
            .and_then(|name| claim(&claims, name))
            .map(|value| match value {
                Value::Array(items) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                Value::String(one) => vec![one.clone()],
                _ => Vec::new(),
            })
            .unwrap_or_default()
            .into_iter()
            .filter(|g| issuer.config.allowed_groups.contains(g))
            .collect();
        let identity = ExternalIdentity {
            issuer_name: issuer.config.name.clone(),
            issuer: iss,
            principal,
            groups,
            token_id: claims.get("jti").and_then(Value::as_str).map(str::to_owned),
            expires,
            claims,
        };
        Ok((issuer, identity))
    }
}

/// A time claim (`exp`, `nbf`, `iat`) in Unix seconds, `None` when absent or null: an integer,
/// or a non-negative number rounded as jsonwebtoken takes it. Anything else is refused, never
/// skipped, and so is a time after 9999-12-31, which no clock reaches and whose arithmetic
/// would overflow.
fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, ExternalTokenError> {
    let value = match claims.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(value) => value,
    };
    let seconds = value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f.round() as u64)
    });
    match seconds {
        Some(seconds) if seconds <= crate::identity::token::LATEST_EXP => Ok(Some(seconds)),
        Some(_) => Err(ExternalTokenError::Malformed(format!(
            "{name} is after 9999-12-31"
        ))),
        None => Err(ExternalTokenError::Malformed(format!(
            "{name} is not a time"
        ))),
    }
}

/// The `iss` a token claims, read before its signature is checked: it only chooses which
/// issuer's keys check it.
fn unverified_issuer(token: &str) -> Result<String, ExternalTokenError> {
    use base64::Engine as _;
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| ExternalTokenError::Malformed("not a JWT".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| ExternalTokenError::Malformed(format!("payload: {e}")))?;
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: String,
    }
    serde_json::from_slice::<Iss>(&bytes)
        .map(|i| i.iss)
        .map_err(|_| ExternalTokenError::Malformed("no iss".into()))
}
