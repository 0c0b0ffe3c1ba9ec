//! Logging in with a trusted issuer's own token as the password, where that issuer allows it
//! (`direct_login`). The token is verified as the exchange verifies it, the principal must be
//! the startup user and among the issuer's `subjects`, the database among its `databases`, and
//! the access plugins decide it as a request without a reason: a grant they hold for people
//! cannot be used this way. The session lives no longer than the token (or the plugins' grant).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::access::{self, Verdict};
use crate::identity::Grant;
use crate::proxy::shared::Shared;

/// What a password that is not a gateway token came to.
pub(super) enum External {
    /// Not a token of a trusted issuer: the gateway token's refusal stands.
    Not,
    Granted(Box<Grant>),
    /// A trusted issuer's token that may not log in: the class for the audit log and metrics,
    /// and what the client is told after "password authentication failed for user ...".
    Refused {
        class: &'static str,
        why: String,
    },
}

fn refused(class: &'static str, why: impl Into<String>) -> External {
    External::Refused {
        class,
        why: why.into(),
    }
}

pub(super) async fn login(shared: &Shared, token: &str, user: &str, database: &str) -> External {
    let Some(named) = shared.issuers.named_by(token) else {
        return External::Not;
    };
    if !named.config.direct_login {
        return refused(
            "exchange_required",
            format!(
                "tokens of issuer \"{}\" are exchanged first (sluice access request, or POST /v1/token)",
                named.config.name
            ),
        );
    }
    let (issuer, identity) = match shared.issuers.verify(token).await {
        Ok(verified) => verified,
        Err(e) => {
            tracing::info!(reason = e.class(), error = %e, "external token refused at login");
            return refused(e.class(), "");
        }
    };
    if identity.principal != user {
        return refused("wrong_user", "");
    }
    if !issuer.allows(&identity.principal) || !issuer.config.databases.iter().any(|d| d == database)
    {
        return refused(
            "not_allowed",
            format!(
                "issuer \"{}\" does not let it use database \"{database}\"",
                issuer.config.name
            ),
        );
    }
    // As long as an exchange would issue: the issuer's and the gateway's caps (a revocation
    // lasts `identity.max_ttl`, so no session may outlive it), and the token's own life.
    let now = crate::identity::unix_now();
    let max_ttl = shared.config.identity.max_ttl;
    let left = Duration::from_secs(identity.expires.saturating_sub(now))
        .min(issuer.config.max_ttl.unwrap_or(max_ttl))
        .min(max_ttl);
    let verdict = match &shared.plugins {
        None => Verdict::Unanswered,
        Some(host) => {
            let set = host.current();
            if let Some(missing) = set.missing.first() {
                tracing::warn!(plugin = %missing, "direct login refused: a required plugin is not serving");
                return refused("plugin_failure", "");
            }
            let request = access::request(
                &identity,
                None,
                database,
                &[],
                left,
                "direct login",
                issuer.config.read_only,
            );
            match access::decide(host, &set, &request).await {
                Ok(verdict) => verdict,
                Err(e) => {
                    tracing::warn!(error = %e, "direct login refused: an access plugin failed");
                    return refused("plugin_failure", "");
                }
            }
        }
    };
    let (groups, lifetime, read_only) = match verdict {
        Verdict::Unanswered => (identity.groups.clone(), left, issuer.config.read_only),
        Verdict::Deny { by, reason } => return refused("access_denied", format!("{by}: {reason}")),
        Verdict::Approval(_) => {
            return refused(
                "approval_required",
                "this access needs approval: ask for it with sluice access request",
            );
        }
        Verdict::Issue(grant) => match grant.shape(&identity.groups, left, &issuer.config) {
            Ok(shaped) => (shaped.groups, shaped.lifetime, shaped.read_only),
            Err(why) => {
                tracing::warn!(%why, "direct login refused");
                return refused("plugin_failure", "");
            }
        },
    };
    if lifetime.is_zero() {
        return refused("expired", "");
    }
    // Revocation by `--jti` names the external token's own id; a token without one is
    // known by a digest of itself (never the token's text).
    let token_id = identity.token_id.clone().unwrap_or_else(|| {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        format!(
            "sha256:{}",
            &crate::audit::record::hex(digest.as_ref())[..32]
        )
    });
    // The fallback cannot overflow: the verifier refuses an `exp` after 9999.
    let expires_at = SystemTime::now()
        .checked_add(lifetime)
        .unwrap_or_else(|| UNIX_EPOCH + Duration::from_secs(identity.expires));
    External::Granted(Box::new(Grant {
        subject: identity.principal,
        database: database.to_owned(),
        groups,
        token_id,
        issuer: identity.issuer.clone(),
        origin: Some(identity.issuer),
        origin_token_id: identity.token_id,
        read_only,
        expires_at,
        actor: None,
        minted: None,
    }))
}
