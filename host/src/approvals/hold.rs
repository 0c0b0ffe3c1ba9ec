//! Holding a statement for approval on its live connection: a scoped grant that covers it
//! lets it run at once; otherwise the request is routed (approval plugins, then the default
//! route), recorded, and waited on until people (or a plugin, or the clock) decide, or the
//! session gives up (the client cancels or leaves). The session only says what it holds and
//! how it would give up; what the request's record says stays here.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{ApprovalError, Approvals, NewRequest, Opened, Routing, Scope};
use crate::analysis::Statement;
use crate::identity::SessionInfo;
use crate::plugins::{CallCatalog, PluginHost, PluginSet, wit};
use crate::state::Status;
use crate::wire::backend::{self as messages, Refusal};
use crate::wire::sqlstate;

/// A statement a policy sent for approval, as the session holds it.
pub struct Held<'a> {
    pub info: &'a SessionInfo,
    /// What the approvers are shown.
    pub sql: &'a str,
    pub statements: &'a [Statement],
    /// The values bound to it as approval plugins get them (text; `None` for NULL and binary).
    pub params: &'a [Option<String>],
    /// The values as approvers and the audit record see them (binary as hex).
    pub shown: &'a [Option<String>],
    /// The statements of the session before it that changed what names mean.
    pub settings: Vec<String>,
    /// The policy plugin that asked, and why.
    pub plugin: &'a str,
    pub reason: &'a str,
    /// The plugin host whose approval plugins route the request (`None`: the default route).
    pub plugins: Option<Arc<PluginHost>>,
    /// Notices for the client, sent while the statement waits.
    pub notices: &'a mpsc::UnboundedSender<Bytes>,
}

/// How a hold ended.
#[derive(Debug, Default)]
pub struct Outcome {
    /// `None`: the statement runs.
    pub refusal: Option<Refusal>,
    /// The approval request it ran (or was refused) under, if one was made or matched.
    pub approval: Option<String>,
    /// Each vote, as the audit record lists them.
    pub approvers: Vec<String>,
    /// The session gave up waiting and the request was withdrawn.
    pub withdrawn: bool,
}

/// Holds `held` until it is decided. `before_waiting` runs once a request must be waited on
/// (what the client sent before the statement goes on meanwhile); `gives_up` completes when
/// the session stops waiting (a cancel, a client that left).
pub async fn hold(
    approvals: &Arc<Approvals>,
    held: Held<'_>,
    before_waiting: impl Future<Output = ()>,
    gives_up: impl Future<Output = ()>,
) -> Outcome {
    let mut outcome = Outcome::default();
    outcome.refusal = decide(approvals, &held, before_waiting, gives_up, &mut outcome).await;
    outcome
}

async fn decide(
    approvals: &Arc<Approvals>,
    held: &Held<'_>,
    before_waiting: impl Future<Output = ()>,
    gives_up: impl Future<Output = ()>,
    outcome: &mut Outcome,
) -> Option<Refusal> {
    let (plugin, reason) = (held.plugin, held.reason);
    let notify = |text: String| {
        let _ = held.notices.send(messages::notice(text));
    };
    let unavailable = |e: ApprovalError| {
        tracing::error!(error = %e, "approval store failed; statement refused");
        Some(Refusal::new(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!(
                "sluice: policy \"{plugin}\" requires approval ({reason}), and the approval store failed"
            ),
        ))
    };
    // What a scoped grant for this text with these values covers; a text the scanner cannot
    // read gets a key no grant has.
    let scope = Scope::of(held.sql, held.shown, &held.settings);
    let fingerprint = scope.as_ref().map_or_else(rand::random, |scope| scope.key);
    let granted = if scope.is_some() {
        approvals
            .granted(&held.info.subject, &held.info.database, fingerprint)
            .await
    } else {
        Ok(None)
    };
    match granted {
        Ok(Some(grant)) => {
            tracing::info!(%plugin, approval = %grant.request_id, "statement runs under a scoped approval");
            // The client learns what let it through, and until when.
            let until = humantime::format_rfc3339_seconds(grant.until);
            notify(format!(
                "sluice: runs under the scoped grant of approval {} (until {until}); policy \"{plugin}\" asked for approval: {reason}",
                grant.request_id
            ));
            outcome.approval = Some(grant.request_id);
            return None;
        }
        Ok(None) => {}
        Err(e) => return unavailable(e),
    }
    let id = super::new_id();
    outcome.approval = Some(id.clone());
    let routing = match routing_request(&id, held) {
        None => Ok(Routing::Default),
        Some((host, set, request)) => {
            let catalog = CallCatalog::of(held.statements.iter());
            super::route(&host, &set, &request, &catalog).await
        }
    };
    let routing = match routing {
        Ok(routing) => routing,
        Err(e) => {
            tracing::warn!(error = %e, "approval routing failed; statement refused");
            return Some(Refusal::new(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                format!("sluice: policy \"{plugin}\" requires approval ({reason}), and {e}"),
            ));
        }
    };
    let request = NewRequest {
        id,
        session_id: held.info.id,
        subject: held.info.subject.clone(),
        groups: held.info.groups.clone(),
        database: held.info.database.clone(),
        statement: held.sql.to_owned(),
        // As the audit record has them: a binary value as hex, never as NULL.
        parameters: held.shown.to_vec(),
        settings: held.settings.clone(),
        fingerprint,
        plugin: plugin.to_owned(),
        reason: reason.to_owned(),
        access: None,
    };
    let mut pending = match approvals.open(request, routing).await {
        Ok(Opened::Waiting(pending)) => pending,
        // Only requests for access are queued without a waiter; this one is not.
        Ok(Opened::Queued { id, .. }) => {
            return unavailable(ApprovalError::Unavailable(format!(
                "request {id} was queued without its session"
            )));
        }
        Ok(Opened::Decided(record)) => {
            outcome.approvers = super::outcome::approvers(&record);
            if let (Status::Approved, Some(vote)) = (record.status, record.votes.first()) {
                // The agent learns which request id its statement ran under.
                notify(format!(
                    "sluice: approval {} granted by {} ({})",
                    record.request.id,
                    vote.approver,
                    vote.reason.as_deref().unwrap_or_default()
                ));
            }
            return super::outcome::refusal(&record);
        }
        Err(e @ ApprovalError::TooManyPending { .. }) => {
            return Some(Refusal::new(
                sqlstate::CONFIGURATION_LIMIT_EXCEEDED,
                format!("sluice: {e} (approvals.max_pending_per_subject)"),
            ));
        }
        Err(e) => return unavailable(e),
    };
    let id = pending.id.clone();
    before_waiting.await;
    notify(format!(
        "sluice: approval {id} required ({reason}); waiting up to {}",
        humantime::format_duration(pending.timeout)
    ));
    let decided = tokio::select! {
        decided = pending.outcome() => Some(decided),
        () = gives_up => None,
    };
    let record = match decided {
        Some(Ok(record)) => record,
        Some(Err(e)) => return unavailable(e),
        None => match pending.withdraw().await {
            // A decision that landed just before the withdrawal stands.
            Ok(record) if record.status == Status::Approved => record,
            Ok(_) => {
                tracing::info!(approval = %id, "held statement withdrawn by the client");
                outcome.withdrawn = true;
                return Some(Refusal::new(
                    sqlstate::QUERY_CANCELED,
                    format!(
                        "sluice: canceling statement due to user request; approval {id} withdrawn"
                    ),
                ));
            }
            Err(e) => return unavailable(e),
        },
    };
    outcome.approvers = super::outcome::approvers(&record);
    super::outcome::refusal(&record)
}

/// What the approval plugins are asked about this request; `None` when none is serving.
fn routing_request(
    id: &str,
    held: &Held<'_>,
) -> Option<(Arc<PluginHost>, Arc<PluginSet>, wit::ApprovalRequest)> {
    let host = held.plugins.clone()?;
    let set = host.current();
    if set.approvals.is_empty() {
        return None;
    }
    let request = wit::ApprovalRequest {
        id: id.to_owned(),
        session: crate::plugins::convert::session(held.info),
        statements: held
            .statements
            .iter()
            .map(|s| crate::plugins::convert::statement(s, held.params))
            .collect(),
        text: held.sql.to_owned(),
        plugin: held.plugin.to_owned(),
        reason: held.reason.to_owned(),
    };
    Some((host, set, request))
}
