//! `[[identity.issuers]]`: the external identity providers whose tokens the gateway accepts in a
//! token exchange (GitHub Actions, Kubernetes service accounts, SPIFFE, people's OIDC logins),
//! and what each may ask for.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// One trusted issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// A short name for logs, the audit log and metrics (`github`, `prod-cluster`).
    pub name: String,
    /// Fills `issuer`, `algorithms`, `principal` and `groups_claim` for a known kind of
    /// workload: `github-actions`, `kubernetes`, `spiffe`, `oidc`.
    pub preset: Option<IssuerPreset>,
    /// The exact `iss` of its tokens.
    pub issuer: Option<String>,
    /// The exact `aud` its tokens must carry for this gateway.
    pub audience: String,
    /// Where its signing keys are: OIDC discovery at the issuer (the default), an explicit
    /// JWKS URL, or a JWKS file (for sites without a path to the provider).
    pub jwks_url: Option<url::Url>,
    pub jwks_file: Option<PathBuf>,
    /// PEM CA bundle for HTTPS to the provider (default: the Mozilla roots).
    pub ca_file: Option<PathBuf>,
    /// Signature algorithms accepted, from `RS256`, `PS256`, `ES256`, `EdDSA`. The token's
    /// header never chooses: one naming another algorithm is refused.
    pub algorithms: Option<Vec<String>>,
    /// Who the token is, as a template over its claims (`{sub}`, `{repository}@{ref}`,
    /// `{kubernetes.io.namespace}/{kubernetes.io.serviceaccount.name}`); default `{sub}`.
    pub principal: Option<String>,
    /// The claim holding the token's groups (a list of strings), if any.
    pub groups_claim: Option<String>,
    /// The groups of that claim the gateway's token may carry (others are dropped): an
    /// outside provider's group names never become the gateway's (`admin_groups`, approver
    /// groups) unless listed here. Required with `groups_claim`.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// Principals allowed to ask at all (`*` matches any run of characters); none: nobody.
    pub subjects: Vec<String>,
    /// Databases its principals may ask for.
    pub databases: Vec<String>,
    /// Tokens issued for it are read-only grants: Postgres runs their sessions read-only.
    #[serde(default)]
    pub read_only: bool,
    /// Its tokens may be used directly as the psql password (default: no, they are exchanged
    /// at `/v1/token` first). The login is then decided as an exchange would be (subjects,
    /// databases, revocations, access plugins), and the session lives no longer than the
    /// token.
    #[serde(default)]
    pub direct_login: bool,
    /// Longest lifetime of a token issued for it (never above `identity.max_ttl`).
    #[serde(default, with = "humantime_serde")]
    pub max_ttl: Option<Duration>,
    /// After a token names a key the gateway does not have, how long before the keys may be
    /// fetched again (a flood of unknown key ids causes at most one fetch per this).
    #[serde(default = "default_refetch_cooldown", with = "humantime_serde")]
    pub refetch_cooldown: Duration,
    /// How long keys fetched earlier keep verifying while the provider cannot be reached.
    #[serde(default = "default_max_stale", with = "humantime_serde")]
    pub max_stale: Duration,
}

/// Known kinds of issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssuerPreset {
    /// GitHub Actions OIDC: `https://token.actions.githubusercontent.com`, RS256; the
    /// principal is `{repository}@{ref}` (`repository`, `repository_id`, `ref`, `environment`,
    /// `job_workflow_ref` are claims of every token).
    GithubActions,
    /// Kubernetes projected service-account tokens: RS256 (or ES256); the principal is the
    /// `sub`, `system:serviceaccount:<namespace>:<name>`. Set `issuer` to the cluster's.
    Kubernetes,
    /// SPIFFE JWT-SVIDs: the principal is the SPIFFE ID (`sub`); `aud` required; ES256,
    /// RS256. Set `issuer` and the trust domain's keys (`jwks_url` or `jwks_file`).
    Spiffe,
    /// Any OpenID Connect provider for people: the principal is `sub` unless said otherwise.
    Oidc,
}

impl IssuerConfig {
    /// The `iss` its tokens carry.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref().or(match self.preset {
            Some(IssuerPreset::GithubActions) => {
                Some("https://token.actions.githubusercontent.com")
            }
            _ => None,
        })
    }

    /// The algorithms accepted.
    pub fn algorithms(&self) -> Vec<String> {
        if let Some(algorithms) = &self.algorithms {
            return algorithms.clone();
        }
        let default: &[&str] = match self.preset {
            Some(IssuerPreset::GithubActions) => &["RS256"],
            Some(IssuerPreset::Kubernetes | IssuerPreset::Spiffe) => &["RS256", "ES256"],
            Some(IssuerPreset::Oidc) | None => &["RS256", "ES256", "PS256", "EdDSA"],
        };
        default.iter().map(|a| (*a).to_owned()).collect()
    }

    /// The principal template.
    pub fn principal(&self) -> &str {
        self.principal.as_deref().unwrap_or(match self.preset {
            Some(IssuerPreset::GithubActions) => "{repository}@{ref}",
            _ => "{sub}",
        })
    }
}

/// Checks `[[identity.issuers]]` against the databases served; an error names the key.
pub(super) fn check(issuers: &[IssuerConfig], databases: &[&str]) -> Result<(), (String, String)> {
    for (i, issuer) in issuers.iter().enumerate() {
        let key = |field: &str| format!("identity.issuers[{i}].{field}");
        let bad = |field: &str, message: String| Err((key(field), message));
        if issuer.name.is_empty() || issuers[..i].iter().any(|o| o.name == issuer.name) {
            return bad("name", "must be set and unique".into());
        }
        match issuer.issuer() {
            None => return bad("issuer", "must be set (no preset names it)".into()),
            Some(iss) if issuers[..i].iter().any(|o| o.issuer() == Some(iss)) => {
                return bad("issuer", format!("{iss} is configured twice"));
            }
            Some(_) => {}
        }
        if issuer.audience.is_empty() {
            return bad("audience", "must not be empty".into());
        }
        if issuer.jwks_url.is_some() && issuer.jwks_file.is_some() {
            return bad("jwks_url", "set jwks_url or jwks_file, not both".into());
        }
        if let Some(url) = &issuer.jwks_url
            && !matches!(url.scheme(), "http" | "https")
        {
            return bad("jwks_url", "must be an http or https URL".into());
        }
        let algorithms = issuer.algorithms();
        if algorithms.is_empty() {
            return bad("algorithms", "must name at least one".into());
        }
        if let Some(other) = algorithms
            .iter()
            .find(|a| !ISSUER_ALGORITHMS.contains(&a.as_str()))
        {
            return bad(
                "algorithms",
                format!("{other} is not one of {}", ISSUER_ALGORITHMS.join(", ")),
            );
        }
        if let Err(e) = crate::identity::principal::PrincipalTemplate::parse(issuer.principal()) {
            return bad("principal", e);
        }
        if issuer.groups_claim.is_some() && issuer.allowed_groups.is_empty() {
            return bad(
                "allowed_groups",
                "must list the groups of groups_claim the gateway's tokens may carry".into(),
            );
        }
        if issuer.subjects.is_empty() {
            return bad(
                "subjects",
                "must list who may ask (\"*\" for anyone)".into(),
            );
        }
        if issuer.databases.is_empty() {
            return bad(
                "databases",
                "must list the databases its principals may ask for".into(),
            );
        }
        if let Some(unknown) = issuer
            .databases
            .iter()
            .find(|d| !databases.contains(&d.as_str()))
        {
            return bad(
                "databases",
                format!("{unknown} is not a configured [[upstream]] database"),
            );
        }
        if issuer.max_ttl.is_some_and(|t| t.is_zero()) {
            return bad("max_ttl", "must be longer than zero".into());
        }
    }
    Ok(())
}

/// The algorithm names an issuer may be configured with.
pub const ISSUER_ALGORITHMS: &[&str] = &["RS256", "PS256", "ES256", "EdDSA"];

fn default_refetch_cooldown() -> Duration {
    Duration::from_secs(60)
}

fn default_max_stale() -> Duration {
    Duration::from_secs(24 * 3600)
}
