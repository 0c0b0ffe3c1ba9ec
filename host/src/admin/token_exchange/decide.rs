//! A new request for access: checked (`parties.rs`), then decided by the access plugins: issue
//! now, queue for approval, or deny.

use std::time::Duration;

use axum::http::StatusCode;

use super::answer::{Issued, OauthError};
use super::asked::Asked;
use super::parties::{Trail, issue, requester};
use crate::access::{self, Verdict};
use crate::admin::state::ExchangeApi;
use crate::approvals::{ApprovalError, NewRequest, Opened, PluginRoute, Routing};
use crate::state::AccessAsk;

/// A new request: checked, decided by the access plugins, issued or queued.
pub(super) async fn ask(api: &ExchangeApi, asked: &Asked<'_>) -> Result<Issued, OauthError> {
    let mut trail = Trail::new(api, asked);
    let database = asked.database.as_str();
    let requester = requester(api, asked, database, &mut trail).await?;
    let (issuer, identity) = &requester.subject;
    let asked_groups: Vec<String> = match &asked.scope {
        // Only groups the token carries can be asked for.
        Some(scope) => {
            if let Some(missing) = scope
                .iter()
                .find(|g| !identity.groups.iter().any(|h| h == *g))
            {
                return Err(trail.deny(format!("the token does not carry group \"{missing}\"")));
            }
            scope.iter().map(|g| (*g).to_owned()).collect()
        }
        None => identity.groups.clone(),
    };
    let cap = issuer
        .config
        .max_ttl
        .unwrap_or(api.max_ttl)
        .min(api.max_ttl);
    let ttl = asked.requested.min(cap).min(requester.left());
    if ttl.is_zero() {
        return Err(trail.deny("the subject token has expired".into()));
    }
    let verdict = match &api.plugins {
        None => Verdict::Unanswered,
        Some(host) => {
            let set = host.current();
            if let Some(missing) = set.missing.first() {
                return Err(
                    trail.unavailable(format!("required plugin \"{missing}\" is not serving"))
                );
            }
            let request = access::request(
                identity,
                requester.actor.as_ref().map(|(_, who)| who),
                database,
                asked
                    .scope
                    .iter()
                    .flatten()
                    .map(|g| (*g).to_owned())
                    .collect::<Vec<_>>()
                    .as_slice(),
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
        let shaped = grant
            .shape(&asked_groups, ttl, &issuer.config)
            .map_err(|why| trail.unavailable(why))?;
        if shaped.lifetime.is_zero() {
            return Err(trail.deny(format!(
                "access plugin \"{}\" allowed no lifetime",
                grant.by
            )));
        }
        Ok((shaped.groups, shaped.lifetime, shaped.read_only))
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
            let (id, secret) = match api.approvals.open(new, routing).await {
                Ok(Opened::Queued { id, secret }) => (id, secret),
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
            super::pending::answer(api, &requester, (&id, &secret), asked.wait, &trail).await
        }
    }
}
