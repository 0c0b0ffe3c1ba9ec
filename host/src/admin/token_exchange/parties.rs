//! Who asks (the presented tokens, their issuers' configuration, revocations), the request's
//! audit trail, and issuing the token.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;

use super::answer::{Issued, JWT, OauthError};
use super::asked::Asked;
use crate::admin::state::ExchangeApi;
use crate::audit::Event;
use crate::identity::external::{ExternalIdentity, TrustedIssuer};
use crate::identity::{Act, Exchanged};
use crate::metrics::ExchangeLabels;
use crate::state::Actor;

/// One verified party of a request, with the issuer that vouches for it.
pub(super) type Party = (Arc<TrustedIssuer>, ExternalIdentity);

/// Who asks: the subject the token is for, and who acts for them.
pub(super) struct Requester {
    pub subject: Party,
    pub actor: Option<Party>,
}

impl Requester {
    /// How long the presented tokens still live: nothing issued outlives its proof.
    pub fn left(&self) -> Duration {
        let now = crate::identity::unix_now();
        let expires = std::iter::once(&self.subject)
            .chain(&self.actor)
            .map(|(_, who)| who.expires)
            .min()
            .unwrap_or(0);
        Duration::from_secs(expires.saturating_sub(now))
    }

    pub fn actor(&self) -> Option<Actor> {
        self.actor.as_ref().map(|(_, who)| Actor {
            principal: who.principal.clone(),
            issuer: who.issuer_name.clone(),
            issuer_url: who.issuer.clone(),
        })
    }
}

/// One request's audit record and metric, filled in as it is learnt who asks.
pub(super) struct Trail<'a> {
    api: &'a ExchangeApi,
    pub database: String,
    reason: String,
    issuer: Option<String>,
    principal: Option<String>,
    actor: Option<String>,
    pub approval: Option<String>,
}

impl<'a> Trail<'a> {
    pub fn new(api: &'a ExchangeApi, asked: &Asked<'_>) -> Trail<'a> {
        Trail {
            api,
            database: asked.database.clone(),
            reason: asked.reason.clone(),
            issuer: None,
            principal: None,
            actor: None,
            // The approval's id, never the requester's secret after it.
            approval: asked.request_id.map(approval_id),
        }
    }

    pub fn record(
        &self,
        outcome: &'static str,
        why: Option<String>,
        issued: Option<(&str, u64)>,
        groups: &[String],
    ) {
        self.api.audit.record(Event::TokenExchange {
            issuer: self.issuer.clone(),
            principal: self.principal.clone(),
            actor: self.actor.clone(),
            database: self.database.clone(),
            reason: self.reason.clone(),
            outcome,
            why,
            token_id: issued.map(|(jti, _)| jti.to_owned()),
            ttl_seconds: issued.map(|(_, ttl)| ttl),
            groups: groups.to_vec(),
            approval: self.approval.clone(),
        });
        self.api
            .metrics
            .token_exchanges
            .get_or_create(&ExchangeLabels {
                issuer: self.issuer.clone().unwrap_or_else(|| "-".into()),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Records a denial and answers it.
    pub fn deny(&self, why: String) -> OauthError {
        tracing::info!(issuer = ?self.issuer, principal = ?self.principal, %why, "token exchange denied");
        self.record("denied", Some(why.clone()), None, &[]);
        OauthError::new(StatusCode::FORBIDDEN, "access_denied", why)
    }

    /// Records a refusal for a reason on the gateway's side (a plugin failed, the store is
    /// down) and answers it: nothing is issued while the gateway cannot decide.
    pub fn unavailable(&self, why: String) -> OauthError {
        tracing::warn!(issuer = ?self.issuer, principal = ?self.principal, %why, "token exchange refused: cannot decide");
        self.record("refused", Some(why.clone()), None, &[]);
        OauthError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            why,
        )
    }
}

/// Verifies the presented tokens and checks what the configuration says about them asking
/// for `database`: the subjects and databases of each one's issuer, and revocations.
pub(super) async fn requester(
    api: &ExchangeApi,
    asked: &Asked<'_>,
    database: &str,
    trail: &mut Trail<'_>,
) -> Result<Requester, OauthError> {
    let verify = async |token: &str, role: &str, trail: &Trail<'_>| {
        api.issuers.verify(token).await.map_err(|e| {
            tracing::info!(reason = e.class(), error = %e, role, "token exchange refused a token");
            // The class alone for the subject token, as before actors existed; `actor:` first
            // for the actor's.
            let why = match role {
                "actor token" => format!("actor:{}", e.class()),
                _ => e.class().to_owned(),
            };
            trail.record("refused", Some(why), None, &[]);
            OauthError::new(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                format!("the {role} was not accepted"),
            )
        })
    };
    let subject = verify(asked.subject_token, "subject token", trail).await?;
    trail.issuer = Some(subject.1.issuer_name.clone());
    trail.principal = Some(subject.1.principal.clone());
    let actor = match asked.actor_token {
        Some(token) => {
            let actor = verify(token, "actor token", trail).await?;
            trail.actor = Some(actor.1.principal.clone());
            Some(actor)
        }
        None => None,
    };
    let requester = Requester { subject, actor };
    for (issuer, who) in std::iter::once(&requester.subject).chain(&requester.actor) {
        let name = &issuer.config.name;
        if !issuer.allows(&who.principal) {
            return Err(trail.deny(format!(
                "{} is not among the subjects issuer \"{name}\" may ask for",
                who.principal
            )));
        }
        if !issuer.config.databases.iter().any(|d| d == database) {
            return Err(trail.deny(format!(
                "principals of issuer \"{name}\" may not ask for database \"{database}\""
            )));
        }
    }
    let parties = || std::iter::once(&requester.subject).chain(&requester.actor);
    let jtis: Vec<Option<&str>> = parties().map(|(_, w)| w.token_id.as_deref()).collect();
    let subjects: Vec<Option<&str>> = parties().map(|(_, w)| Some(&*w.principal)).collect();
    let issuers: Vec<Option<&str>> = parties().map(|(_, w)| Some(&*w.issuer)).collect();
    if let Some(revocation) = api.revocations.matching_token(&jtis, &subjects, &issuers) {
        return Err(trail.deny(format!("revoked ({})", revocation.id)));
    }
    Ok(requester)
}

/// Signs the token and records it.
pub(super) fn issue(
    api: &ExchangeApi,
    requester: &Requester,
    database: &str,
    groups: &[String],
    ttl: Duration,
    read_only: bool,
    trail: &Trail<'_>,
) -> Result<Issued, OauthError> {
    let (_, identity) = &requester.subject;
    let actor = requester.actor.as_ref().map(|(_, who)| Act {
        sub: who.principal.clone(),
        iss: Some(who.issuer.clone()),
        jti: who.token_id.clone(),
    });
    let (token, claims) = api
        .tokens
        .mint_exchanged(&Exchanged {
            subject: &identity.principal,
            database,
            groups,
            ttl,
            idp: &identity.issuer,
            idp_jti: identity.token_id.as_deref(),
            read_only,
            actor,
        })
        .map_err(|e| {
            OauthError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                e.to_string(),
            )
        })?;
    tracing::info!(issuer = %identity.issuer_name, principal = %identity.principal, %database, ttl = ?ttl, token_id = %claims.jti, "token issued in exchange");
    trail.record("issued", None, Some((&claims.jti, ttl.as_secs())), groups);
    Ok(Issued {
        access_token: token,
        issued_token_type: JWT.to_owned(),
        token_type: "N_A".to_owned(),
        expires_in: ttl.as_secs(),
    })
}

/// The approval's id in a `request_id` (the id, a dot, the requester's secret): what may be
/// recorded and shown.
pub(super) fn approval_id(request_id: &str) -> String {
    request_id
        .split_once('.')
        .map_or(request_id, |(id, _)| id)
        .to_owned()
}
