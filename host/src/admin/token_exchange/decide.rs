//! A new request for access: who asks (the presented tokens, their issuers' configuration,
//! revocations), then what the access plugins say: issue now, queue for approval, or deny.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;

use super::{Asked, Issued, JWT, OauthError};
use crate::access::{self, Verdict};
use crate::admin::state::ExchangeApi;
use crate::approvals::{ApprovalError, NewRequest, Opened, PluginRoute, Routing};
use crate::audit::Event;
use crate::identity::external::{ExternalIdentity, TrustedIssuer};
use crate::identity::{Act, Exchanged};
use crate::metrics::ExchangeLabels;
use crate::state::{AccessAsk, Actor};

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
            approval: asked.request_id.map(str::to_owned),
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
            trail.record("refused", Some(format!("{role}: {}", e.class())), None, &[]);
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
    if let Some(revocation) = api
        .revocations
        .matching_token(&jtis, &subjects, &issuers)
    {
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
            OauthError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", e.to_string())
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

/// A new request: checked, decided by the access plugins, issued or queued.
pub(super) async fn ask(api: &ExchangeApi, asked: &Asked<'_>) -> Result<Issued, OauthError> {
    let mut trail = Trail::new(api, asked);
    let database = asked.database.as_str();
    let requester = requester(api, asked, database, &mut trail).await?;
    let (issuer, identity) = &requester.subject;
    let asked_groups: Vec<String> = match &asked.scope {
        // Only groups the token carries can be asked for.
        Some(scope) => {
            if let Some(missing) = scope.iter().find(|g| !identity.groups.iter().any(|h| h == *g)) {
                return Err(trail.deny(format!("the token does not carry group \"{missing}\"")));
            }
            scope.iter().map(|g| (*g).to_owned()).collect()
        }
        None => identity.groups.clone(),
    };
    let cap = issuer.config.max_ttl.unwrap_or(api.max_ttl).min(api.max_ttl);
    let ttl = asked.requested.min(cap).min(requester.left());
    if ttl.is_zero() {
        return Err(trail.deny("the subject token has expired".into()));
    }
    let verdict = match &api.plugins {
        None => Verdict::Unanswered,
        Some(host) => {
            let set = host.current();
            if let Some(missing) = set.missing.first() {
                return Err(trail.unavailable(format!("required plugin \"{missing}\" is not serving")));
            }
            let request = access::request(
                identity,
                requester.actor.as_ref().map(|(_, who)| who),
                database,
                asked.scope.iter().flatten().map(|g| (*g).to_owned()).collect::<Vec<_>>().as_slice(),
                ttl,
                &asked.reason,
                issuer.config.read_only,
            );
            access::decide(host, &set, &request)
                .await
                .map_err(|e| trail.unavailable(e.to_string()))?
        }
    };
    // What a plugin's grant may hold: never longer, never a group the issuer does not allow.
    let shaped = |grant: &access::Grant| -> Result<(Vec<String>, Duration, bool), OauthError> {
        let groups = grant.groups.clone().unwrap_or_else(|| asked_groups.clone());
        if let Some(foreign) = groups.iter().find(|g| !issuer.config.allowed_groups.contains(g)) {
            return Err(trail.unavailable(format!(
                "access plugin \"{}\" granted group \"{foreign}\", which is not among issuer \"{}\"'s allowed_groups",
                grant.by, issuer.config.name
            )));
        }
        let ttl = grant.lifetime.map_or(ttl, |l| l.min(ttl));
        if ttl.is_zero() {
            return Err(trail.deny(format!("access plugin \"{}\" allowed no lifetime", grant.by)));
        }
        Ok((groups, ttl, grant.read_only || issuer.config.read_only))
    };
    match verdict {
        Verdict::Deny { by, reason } => Err(trail.deny(format!("{by}: {reason}"))),
        Verdict::Unanswered => issue(
            api,
            &requester,
            database,
            &asked_groups,
            ttl,
            issuer.config.read_only,
            &trail,
        ),
        Verdict::Issue(grant) => {
            let (groups, ttl, read_only) = shaped(&grant)?;
            issue(api, &requester, database, &groups, ttl, read_only, &trail)
        }
        Verdict::Approval(approval) => {
            let (groups, ttl, read_only) = shaped(&approval.grant)?;
            let new = NewRequest {
                id: crate::approvals::new_id(),
                session_id: 0,
                subject: identity.principal.clone(),
                groups,
                database: database.to_owned(),
                statement: String::new(),
                parameters: Vec::new(),
                settings: Vec::new(),
                fingerprint: 0,
                plugin: approval.grant.by.clone(),
                reason: approval.reason.clone(),
                access: Some(AccessAsk {
                    issuer: identity.issuer_name.clone(),
                    issuer_url: identity.issuer.clone(),
                    actor: requester.actor(),
                    lifetime_secs: ttl.as_secs(),
                    read_only,
                    reason: asked.reason.clone(),
                }),
            };
            let routing = if approval.approver_groups.is_empty() {
                Routing::Default
            } else {
                Routing::Ask(PluginRoute {
                    by: approval.grant.by.clone(),
                    approver_groups: approval.approver_groups.clone(),
                    approvals_needed: approval.approvals_needed.max(1),
                    timeout: approval.timeout,
                    note: None,
                })
            };
            let id = match api.approvals.open(new, routing).await {
                Ok(Opened::Queued(id)) => id,
                Ok(Opened::Waiting(_) | Opened::Decided(_)) => {
                    return Err(trail.unavailable("the request was not queued".into()));
                }
                Err(e @ ApprovalError::TooManyPending { .. }) => {
                    trail.record("denied", Some(e.to_string()), None, &[]);
                    return Err(OauthError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "slow_down",
                        format!("{e} (approvals.max_pending_per_subject)"),
                    ));
                }
                Err(e) => return Err(trail.unavailable(e.to_string())),
            };
            trail.approval = Some(id.clone());
            trail.record("pending", Some(approval.reason.clone()), None, &[]);
            super::pending::answer(api, &requester, &id, asked.wait, &trail).await
        }
    }
}
