//! How the gate judges a statement text or an execution: its analysis (executions resolved to
//! what they run), what the database's catalog adds, the masking checks made before it runs,
//! and the policy pipeline's verdict.

use super::*;

/// What the policies said about a statement text.
pub(super) enum Judgement {
    Pass,
    Refuse(Refusal),
    Approval(Arc<NeedsApproval>),
}

/// The analysis and decision of the last statement text judged.
#[derive(Default)]
pub(super) struct Last {
    pub(super) statements: Option<Arc<[Statement]>>,
    pub(super) decided: Decided,
    /// The text runs code the gateway cannot see into (`opaque.rs`).
    pub(super) opaque: bool,
    /// What running it does to the settings names depend on (`name_context.rs`).
    pub(super) names: Change,
}

impl Last {
    /// Nothing judged yet: allowed unless something says otherwise.
    pub(super) fn allowed() -> Last {
        Last {
            decided: Decided {
                decision: Decision::Allow,
                ..Decided::default()
            },
            ..Last::default()
        }
    }
}

impl Gate {
    /// Why masking refuses one of `statements` before it runs: a FETCH or EXECUTE whose rows
    /// nothing can account for, or values of masked columns leaving by COPY or a write.
    pub(super) async fn masking_refusal(&mut self, statements: &[Statement]) -> Option<String> {
        let (Some(tracker), Some(maskers), Some(host)) =
            (&self.tracker, &mut self.maskers, &self.shared.plugins)
        else {
            return None;
        };
        let set = host.current();
        let mut declared: Vec<&str> = Vec::new();
        for statement in statements {
            let local = match (&statement.wrapper, &statement.prepared) {
                (Some(Wrapper::DeclareCursor), _) => statement.cursor.as_deref(),
                (_, Some(PreparedOp::Prepare(name))) => Some(name.as_str()),
                _ => None,
            };
            declared.extend(local);
            let uses = statement
                .fetched_cursor()
                .or_else(|| statement.executed_name());
            let declared_here = uses.is_some_and(|name| declared.contains(&name));
            if !declared_here
                && let Err(Unplannable::Unknown(what, name)) = tracker.lineage_source(statement)
            {
                return Some(format!(
                    "sluice: the rows of {what} \"{name}\" cannot be masked: it was not created through this session"
                ));
            }
            let Some(catalog) = self.shared.catalogs.get(&self.info.database) else {
                return Some("sluice: no catalog for masking this database".into());
            };
            let user_functions = self.shared.config.masking.user_functions;
            match masking::check_statement(
                &set,
                maskers,
                &self.info,
                catalog,
                statement,
                user_functions,
            )
            .await
            {
                Ok(None) => {}
                Ok(Some(reason)) => return Some(format!("sluice: refused by masking: {reason}")),
                Err(failure) => return Some(format!("sluice: refused: {failure}")),
            }
        }
        None
    }

    /// Writes the audit record of the statement text last judged. A text allowed to run is
    /// durable before it is forwarded; if the log cannot take it, the text is refused instead.
    /// Returns the (possibly new) refusal and the record number.
    pub(super) async fn record_text(
        &mut self,
        protocol: crate::audit::Protocol,
        sql: Option<&str>,
        params: &[Option<String>],
        refusal: Option<Refusal>,
    ) -> (Option<Refusal>, u64) {
        let last = std::mem::take(&mut self.last);
        let decided = refused_if(last.decided, &refusal);
        let metrics = &self.shared.metrics;
        match last.statements.as_deref() {
            Some(statements) => {
                for statement in statements {
                    let kind = statement.kind.label();
                    self.counts.count(metrics, kind, decided.decision.as_str());
                }
            }
            None => self
                .counts
                .count(metrics, "unanalysed", decided.decision.as_str()),
        }
        if !self.trail.enabled() {
            self.last.statements = last.statements;
            self.last.opaque = last.opaque;
            self.last.names = last.names;
            return (refusal, 0);
        }
        let written = self
            .trail
            .text(protocol, sql, last.statements.as_deref(), params, decided)
            .await;
        self.last.statements = last.statements;
        self.last.opaque = last.opaque;
        self.last.names = last.names;
        match written {
            Ok(id) => (refusal, id),
            Err(e) => (refusal.or_else(|| Some(audit_refusal(&e))), 0),
        }
    }

    /// `None` to let the statement text through (held for approval first if a policy says
    /// so), or the SQLSTATE and message refusing it.
    pub(super) async fn check_text<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &mut self,
        sql: Option<&str>,
        bound: &Bound,
        client: &mut FrameReader<R>,
        out: &mut FrameWriter<W>,
    ) -> Option<Refusal> {
        match self.judge(sql, &bound.text).await {
            Judgement::Pass => None,
            Judgement::Refuse(r) => Some(r),
            Judgement::Approval(approval) => self.hold(&approval, bound, client, out).await,
        }
    }

    /// What the policies say about a statement text. Also keeps its analysis and decision
    /// in `last` for the audit record.
    pub(super) async fn judge(
        &mut self,
        sql: Option<&str>,
        params: &[Option<String>],
    ) -> Judgement {
        self.last = Last::allowed();
        // No plugin directory, or one with no policy in it: nobody objects.
        let plugins = self
            .instances
            .as_ref()
            .map(|i| i.host().current())
            .filter(|p| p.guards());
        let auditing = self.trail.enabled();
        let masking = self.tracking();
        // A read-only grant's settings guard needs the analysis even with nothing else on.
        let read_only = self.info.read_only;
        if plugins.is_none() && !auditing && !masking && !read_only {
            return Judgement::Pass;
        }
        self.statements += 1;
        let span = tracing::debug_span!("statement", sluice.statement = self.statements);
        let Some(sql) = sql else {
            if plugins.is_none() && !masking && !read_only {
                return Judgement::Pass;
            }
            return Judgement::Refuse(Refusal::new(
                sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
                "sluice: statement text is not valid UTF-8 (use client_encoding UTF8)",
            ));
        };
        let statements = match self.shared.analyzer.analyze(sql) {
            Ok(statements) => statements,
            // Without policies nothing depends on the analysis: Postgres answers the error.
            Err(_) if plugins.is_none() && !masking && !read_only => return Judgement::Pass,
            Err(e) => {
                span.in_scope(|| tracing::info!(error = %e, "unparsable statement refused"));
                return Judgement::Refuse(Refusal::new(
                    sqlstate::SYNTAX_ERROR,
                    format!("sluice: {e}"),
                ));
            }
        };
        self.last.statements = Some(statements.clone());
        // Executions of named statements are judged as what they run, by every check.
        let resolved = if plugins.is_some() || masking {
            match self.named.resolve(&self.shared.analyzer, &statements) {
                Ok(resolved) => resolved,
                Err(e) => {
                    span.in_scope(|| tracing::info!(error = %e, "execution refused"));
                    self.last.decided.decision = Decision::Deny;
                    return Judgement::Refuse(Refusal::new(
                        sqlstate::INSUFFICIENT_PRIVILEGE,
                        format!("sluice: {e}"),
                    ));
                }
            }
        } else {
            statements.to_vec()
        };
        let mut resolved = resolved;
        let catalog = self.shared.catalogs.get(&self.info.database).cloned();
        self.last.opaque = catalog_facts(catalog, &mut resolved).await;
        self.last.names = Change::of(&resolved, self.last.opaque);
        // Postgres must go on reading the bytes as the gateway does, stopping statements at
        // the budget, and running a read-only grant read-only.
        let budget = self.statement_budget;
        let refused = resolved.iter().flat_map(|s| &s.settings).find_map(|c| {
            crate::proxy::session::reading::refused_change(c)
                .or_else(|| crate::proxy::session::runaway::refused_change(c, budget))
                .or_else(|| crate::proxy::session::read_only::refused_change(c, read_only))
        });
        let refused = refused.or_else(|| {
            crate::proxy::session::read_only::refused_statements(
                &resolved,
                self.last.opaque,
                read_only,
            )
        });
        if let Some(why) = refused {
            span.in_scope(|| tracing::info!(reason = %why, "statement refused"));
            self.last.decided.decision = Decision::Deny;
            return Judgement::Refuse(Refusal::new(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                format!("sluice: {why}"),
            ));
        }
        if masking && let Some(reason) = self.masking_refusal(&resolved).await {
            span.in_scope(|| tracing::info!(%reason, "statement refused by masking"));
            self.last.decided.decision = Decision::Deny;
            return Judgement::Refuse(Refusal::new(sqlstate::INSUFFICIENT_PRIVILEGE, reason));
        }
        let Some(plugins) = plugins else {
            return Judgement::Pass;
        };
        // A string that only prepares (and deallocates) runs nothing: when it needs approval it
        // passes, and each execution of what it prepared is held instead.
        let only_prepares = statements.iter().all(|s| {
            s.wrapper == Some(Wrapper::Prepare)
                || matches!(
                    s.prepared,
                    Some(PreparedOp::Deallocate(_) | PreparedOp::DeallocateAll)
                )
        });
        self.decide(&plugins, sql, resolved, params, only_prepares, span)
            .await
    }

    /// A Bind of `name`, a statement SQL PREPARE made, judged as what it runs: `None` lets it
    /// through (held for approval first if a policy says so).
    pub(super) async fn check_bound<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &mut self,
        name: &str,
        bound: &Bound,
        client: &mut FrameReader<R>,
        out: &mut FrameWriter<W>,
    ) -> Option<Refusal> {
        let plugins = self
            .instances
            .as_ref()
            .map(|i| i.host().current())
            .filter(|p| p.guards())?;
        self.statements += 1;
        let span = tracing::debug_span!("statement", sluice.statement = self.statements);
        let execute = format!("EXECUTE \"{}\"", name.replace('"', "\"\""));
        let resolved = self
            .shared
            .analyzer
            .analyze(&execute)
            .map_err(|e| e.to_string())
            .and_then(|statements| {
                self.named
                    .resolve(&self.shared.analyzer, &statements)
                    .map_err(|e| e.to_string())
            });
        let mut resolved = match resolved {
            Ok(resolved) => resolved,
            Err(e) => {
                self.last.decided.decision = Decision::Deny;
                return Some(Refusal::new(
                    sqlstate::INSUFFICIENT_PRIVILEGE,
                    format!("sluice: {e}"),
                ));
            }
        };
        let catalog = self.shared.catalogs.get(&self.info.database).cloned();
        let opaque = catalog_facts(catalog, &mut resolved).await;
        self.last.names = Change::of(&resolved, opaque);
        match self
            .decide(&plugins, &execute, resolved, &bound.text, false, span)
            .await
        {
            Judgement::Pass => None,
            Judgement::Refuse(r) => Some(r),
            Judgement::Approval(approval) => self.hold(&approval, bound, client, out).await,
        }
    }

    /// The policies' verdict on `statements` (executions already resolved), sent as `sql`.
    pub(super) async fn decide(
        &mut self,
        plugins: &PluginSet,
        sql: &str,
        statements: Vec<Statement>,
        params: &[Option<String>],
        only_prepares: bool,
        span: tracing::Span,
    ) -> Judgement {
        let Some(instances) = self.instances.as_mut() else {
            return Judgement::Pass;
        };
        let mut verdict = policy::decide(plugins, instances, &self.info, &statements, params)
            .instrument(span.clone())
            .await;
        if only_prepares && matches!(verdict, Verdict::RequireApproval(_)) {
            verdict = Verdict::Allow;
        }
        let executes = statements
            .iter()
            .any(|s| s.wrapper == Some(Wrapper::Execute));
        // Approvers must see what runs: for an execution, each definition the name may have
        // (which a scoped grant then covers too, never "EXECUTE name" alone).
        let shown = if executes {
            let texts: Vec<&str> = statements.iter().map(|s| s.text.as_str()).collect();
            texts.join(";\n")
        } else {
            sql.to_owned()
        };
        match &verdict {
            Verdict::Allow => {}
            Verdict::Deny(d) | Verdict::RequireApproval(d) => {
                self.last.decided = Decided {
                    decision: if matches!(verdict, Verdict::Deny(_)) {
                        Decision::Deny
                    } else {
                        Decision::Approval
                    },
                    plugin: Some(d.plugin.to_string()),
                    plugin_hash: Some(d.hash.to_string()),
                    reason: Some(d.reason.clone()),
                    ..Decided::default()
                };
            }
        }
        match verdict {
            Verdict::Allow => Judgement::Pass,
            Verdict::Deny(d) => {
                span.in_scope(
                    || tracing::info!(plugin = %d.plugin, reason = %d.reason, "statement denied"),
                );
                Judgement::Refuse(Refusal::new(
                    sqlstate::INSUFFICIENT_PRIVILEGE,
                    format!("sluice: refused by policy \"{}\": {}", d.plugin, d.reason),
                ))
            }
            Verdict::RequireApproval(decider) => Judgement::Approval(Arc::new(NeedsApproval {
                decider,
                generation: plugins.generation,
                sql: shown,
                statements: statements.into(),
                span,
            })),
        }
    }
}

/// What the database's catalog adds to `statements`: each one calling a user-defined function
/// declared VOLATILE is marked as writing; and whether they run code the gateway cannot see
/// into (a DO block, CALL, or any user-defined function). Without a readable catalog, any
/// function not qualified `pg_catalog.` counts as both. Not a method: a `&Gate` held across the
/// catalog read would require the session's plugin stores to be `Sync`.
pub(super) async fn catalog_facts(
    catalog: Option<Arc<masking::Catalog>>,
    statements: &mut [Statement],
) -> bool {
    use crate::analysis::StatementKind;
    let mut opaque = statements
        .iter()
        .any(|s| matches!(s.kind, StatementKind::DoBlock | StatementKind::Call));
    if statements.iter().all(|s| s.functions.is_empty()) {
        return opaque;
    }
    let snapshot = match catalog {
        Some(catalog) => catalog.snapshot(&[]).await.ok(),
        None => None,
    };
    // `Some(volatile)` for a function counted as user-defined: without a catalog, any that is
    // not plainly a built-in, and with one, also one the read does not know (created since,
    // perhaps in this very transaction).
    let assumed = |f: &str| match &snapshot {
        Some(snapshot) => snapshot.function_facts(f),
        None => (!f.starts_with("pg_catalog.")).then_some(true),
    };
    for statement in statements.iter_mut() {
        let found: Vec<crate::analysis::FunctionFacts> = statement
            .functions
            .iter()
            .filter_map(|f| {
                assumed(f).map(|volatile| crate::analysis::FunctionFacts {
                    name: f.clone(),
                    volatile,
                })
            })
            .collect();
        if found.is_empty() {
            // Only built-ins (the common case): the cached analysis is shared as it is.
            continue;
        }
        opaque = true;
        let facts = Arc::make_mut(&mut statement.facts);
        if found.iter().any(|f| f.volatile) {
            // A volatile function can write (a SQL or PL/pgSQL function that deletes): the
            // statement is reported as writing, whatever it looks like.
            facts.writes = true;
            facts.calls_volatile_user_function = true;
            facts.shape = None;
        }
        facts.user_functions = found;
    }
    opaque
}
