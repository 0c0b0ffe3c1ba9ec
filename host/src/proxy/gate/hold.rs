//! Holding a statement for approval on the live connection: a scoped grant that covers it,
//! routing, the request, the wait (what came before it goes on; the client may cancel or
//! leave), and the decision made again if the plugins changed meanwhile.

use super::*;

/// A statement text a policy sends for approval.
pub(super) struct NeedsApproval {
    pub(super) decider: Decider,
    /// What the approvers are shown.
    pub(super) sql: String,
    pub(super) statements: Arc<[Statement]>,
    /// The plugin set that asked for approval: another set decides again before it runs.
    pub(super) generation: u64,
    pub(super) span: tracing::Span,
}

impl Gate {
    /// Holds a statement until approvers decide, the request expires, or the client cancels or
    /// leaves. `None` lets it through.
    pub(super) async fn hold<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &mut self,
        approval: &NeedsApproval,
        bound: &Bound,
        client: &mut FrameReader<R>,
        out: &mut FrameWriter<W>,
    ) -> Option<Refusal> {
        let span = approval.span.clone();
        self.last.decided = Decided {
            decision: Decision::Approval,
            plugin: Some(approval.decider.plugin.to_string()),
            plugin_hash: Some(approval.decider.hash.to_string()),
            reason: Some(approval.decider.reason.clone()),
            ..Decided::default()
        };
        let refusal = self
            .hold_in_span(approval, bound, client, out)
            .instrument(span)
            .await;
        // A withdrawal is marked where it happens; every other refusal is the people's (or
        // the store's) answer.
        let withdrawn = self.last.decided.decision == Decision::Withdrawn;
        self.last.decided.decision = match &refusal {
            None => Decision::Approved,
            Some(_) if withdrawn => Decision::Withdrawn,
            Some(r) if r.sqlstate == sqlstate::QUERY_CANCELED => Decision::ApprovalExpired,
            Some(_) => Decision::ApprovalDenied,
        };
        if refusal.is_none() {
            return self.recheck(approval, bound).await;
        }
        refusal
    }

    /// An approved statement, decided again if the plugins changed while it waited: a deny
    /// plugin loaded in the meantime (or a required one gone) refuses it; an approval covers
    /// only what the policies then in force could still allow.
    pub(super) async fn recheck(
        &mut self,
        approval: &NeedsApproval,
        bound: &Bound,
    ) -> Option<Refusal> {
        let current = self.instances.as_ref()?.host().current();
        if current.generation == approval.generation {
            return None;
        }
        let instances = self.instances.as_mut()?;
        let verdict = policy::decide(
            &current,
            instances,
            &self.info,
            &approval.statements,
            &bound.text,
        )
        .instrument(approval.span.clone())
        .await;
        let Verdict::Deny(d) = verdict else {
            return None;
        };
        approval.span.in_scope(|| {
            tracing::info!(plugin = %d.plugin, reason = %d.reason, "approved statement denied by the plugins now serving")
        });
        self.last.decided = Decided {
            decision: Decision::Deny,
            plugin: Some(d.plugin.to_string()),
            plugin_hash: Some(d.hash.to_string()),
            reason: Some(d.reason.clone()),
            approval: self.last.decided.approval.take(),
            approvers: std::mem::take(&mut self.last.decided.approvers),
        };
        Some(Refusal::new(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!(
                "sluice: refused by policy \"{}\" (the plugins changed while the statement waited for approval): {}",
                d.plugin, d.reason
            ),
        ))
    }

    pub(super) async fn hold_in_span<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &mut self,
        approval: &NeedsApproval,
        bound: &Bound,
        client: &mut FrameReader<R>,
        out: &mut FrameWriter<W>,
    ) -> Option<Refusal> {
        let (decider, sql) = (&approval.decider, &approval.sql);
        let approvals = self.shared.approvals.clone();
        // What a scoped grant for this text with these values covers; a text the scanner
        // cannot read gets a key no grant has.
        let settings = self.names.shown();
        let scope = approvals::Scope::of(sql, &bound.shown, &settings);
        let fingerprint = scope.as_ref().map_or_else(rand::random, |scope| scope.key);
        let unavailable = |e: ApprovalError| {
            tracing::error!(error = %e, "approval store failed; statement refused");
            Some(Refusal::new(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                format!(
                    "sluice: policy \"{}\" requires approval ({}), and the approval store failed",
                    decider.plugin, decider.reason
                ),
            ))
        };
        let granted = if scope.is_some() {
            approvals
                .granted(&self.info.subject, &self.info.database, fingerprint)
                .await
        } else {
            Ok(None)
        };
        match granted {
            Ok(Some(grant)) => {
                tracing::info!(plugin = %decider.plugin, approval = %grant.request_id, "statement runs under a scoped approval");
                // The client learns what let it through, and until when.
                let until = humantime::format_rfc3339_seconds(grant.until);
                let _ = self.signals.notices.send(messages::notice(format!(
                    "sluice: runs under the scoped grant of approval {} (until {until}); policy \"{}\" asked for approval: {}",
                    grant.request_id, decider.plugin, decider.reason
                )));
                self.last.decided.approval = Some(grant.request_id);
                return None;
            }
            Ok(None) => {}
            Err(e) => return unavailable(e),
        }
        let id = approvals::new_id();
        self.last.decided.approval = Some(id.clone());
        let routing = match self.routing_request(&id, approval, &bound.text) {
            None => Ok(Routing::Default),
            Some((host, set, request)) => {
                let catalog = crate::plugins::CallCatalog::of(approval.statements.iter());
                approvals::route(&host, &set, &request, &catalog).await
            }
        };
        let routing = match routing {
            Ok(routing) => routing,
            Err(e) => {
                tracing::warn!(error = %e, "approval routing failed; statement refused");
                return Some(Refusal::new(
                    sqlstate::INSUFFICIENT_PRIVILEGE,
                    format!(
                        "sluice: policy \"{}\" requires approval ({}), and {e}",
                        decider.plugin, decider.reason
                    ),
                ));
            }
        };
        let request = NewRequest {
            id,
            session_id: self.info.id,
            subject: self.info.subject.clone(),
            groups: self.info.groups.clone(),
            database: self.info.database.clone(),
            statement: sql.clone(),
            // As the audit record has them: a binary value as hex, never as NULL.
            parameters: bound.shown.clone(),
            settings,
            fingerprint,
            plugin: decider.plugin.to_string(),
            reason: decider.reason.clone(),
        };
        let mut pending = match approvals.open(request, routing).await {
            Ok(Opened::Waiting(pending)) => pending,
            Ok(Opened::Decided(record)) => {
                self.last.decided.approvers = approvals::outcome::approvers(&record);
                if let (Status::Approved, Some(vote)) = (record.status, record.votes.first()) {
                    // The agent learns which request id its statement ran under.
                    let _ = self.signals.notices.send(messages::notice(format!(
                        "sluice: approval {} granted by {} ({})",
                        record.request.id,
                        vote.approver,
                        vote.reason.as_deref().unwrap_or_default()
                    )));
                }
                return approvals::outcome::refusal(&record);
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
        // What the client sent before the held statement is ahead of it: it runs now, and
        // its answers reach the client while this one waits. (A failed write shows again at
        // the session's own flush.)
        let _ = out.flush().await;
        let _ = self.signals.notices.send(messages::notice(format!(
            "sluice: approval {id} required ({}); waiting up to {}",
            decider.reason,
            humantime::format_duration(pending.timeout)
        )));
        let cancelled = self.signals.cancelled.clone();
        let outcome = tokio::select! {
            outcome = pending.outcome() => Some(outcome),
            () = cancelled.notified() => None,
            _ = client.departed(HELD_BACKLOG) => None,
        };
        let record = match outcome {
            Some(Ok(record)) => record,
            Some(Err(e)) => return unavailable(e),
            None => match pending.withdraw().await {
                // A decision that landed just before the withdrawal stands.
                Ok(record) if record.status == Status::Approved => record,
                Ok(_) => {
                    tracing::info!(approval = %id, "held statement withdrawn by the client");
                    self.last.decided.decision = Decision::Withdrawn;
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
        self.last.decided.approvers = approvals::outcome::approvers(&record);
        approvals::outcome::refusal(&record)
    }

    /// What the approval plugins are asked about this request; `None` when none is serving.
    /// (Not async: a `&Gate` held across an await would require the session's plugin stores
    /// to be `Sync`.)
    pub(super) fn routing_request(
        &self,
        id: &str,
        approval: &NeedsApproval,
        params: &[Option<String>],
    ) -> Option<(Arc<PluginHost>, Arc<PluginSet>, wit::ApprovalRequest)> {
        let host = self.shared.plugins.clone()?;
        let set = host.current();
        if set.approvals.is_empty() {
            return None;
        }
        let request = wit::ApprovalRequest {
            id: id.to_owned(),
            session: crate::plugins::convert::session(&self.info),
            statements: approval
                .statements
                .iter()
                .map(|s| crate::plugins::convert::statement(s, params))
                .collect(),
            text: approval.sql.clone(),
            plugin: approval.decider.plugin.to_string(),
            reason: approval.decider.reason.clone(),
        };
        Some((host, set, request))
    }
}
