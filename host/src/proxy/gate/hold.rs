//! A statement held for approval on the live connection: the hold itself is the approval
//! queue's (`approvals::hold`); the gate says what it holds, lets what came before it go on,
//! gives up when the client cancels or leaves, and decides again if the plugins changed
//! meanwhile.

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
        let held = approvals::hold::Held {
            info: &self.info,
            sql: &approval.sql,
            statements: &approval.statements,
            params: &bound.text,
            shown: &bound.shown,
            settings: self.names.shown(),
            plugin: &approval.decider.plugin,
            reason: &approval.decider.reason,
            plugins: self.shared.plugins.clone(),
            notices: &self.signals.notices,
        };
        // What the client sent before the held statement is ahead of it: it runs now, and its
        // answers reach the client while this one waits. (A failed write shows again at the
        // session's own flush.)
        let before_waiting = async {
            let _ = out.flush().await;
        };
        let cancelled = self.signals.cancelled.clone();
        let gives_up = async {
            tokio::select! {
                () = cancelled.notified() => {}
                _ = client.departed(HELD_BACKLOG) => {}
            }
        };
        let outcome = approvals::hold::hold(&self.shared.approvals, held, before_waiting, gives_up)
            .instrument(span)
            .await;
        self.last.decided.approval = outcome.approval;
        self.last.decided.approvers = outcome.approvers;
        let refusal = outcome.refusal;
        // Every refusal but a withdrawal is the people's (or the store's) answer.
        self.last.decided.decision = match &refusal {
            None => Decision::Approved,
            Some(_) if outcome.withdrawn => Decision::Withdrawn,
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
}
