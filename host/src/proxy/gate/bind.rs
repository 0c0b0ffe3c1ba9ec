//! Bind: each execution of a statement a policy held (or one the current plugins never
//! judged) is judged again, with its parameter values, as what the name means now; a name the
//! gateway never saw prepared is refused; the audit record of the execution is written here.

use super::*;

impl Gate {
    /// A Bind from the client. `covered_bind`: it is the Bind an unnamed statement's approval
    /// was for (judged with the Parse).
    pub(super) async fn bind<W: AsyncWrite + Unpin, R: AsyncRead + Unpin>(
        &mut self,
        frame: &Frame,
        out: &mut FrameWriter<W>,
        client: &mut FrameReader<R>,
        covered_bind: bool,
    ) {
        let auditing = self.trail.enabled();
        let (portal, rest) = cstr(frame.body());
        let statement = pg_name(cstr(rest).0.unwrap_or(""));
        let policies = self.policies_loaded();
        let generation = self.generation();
        // Nothing to judge in a cycle Postgres is already discarding, nor at the Bind an
        // unnamed statement's approval was for.
        let judging = policies && !self.failing && !covered_bind;
        // Which unnamed statement an earlier cycle left may depend on answers still on
        // their way.
        if judging
            && statement.is_empty()
            && matches!(self.unnamed.runs(self.cycles), Runs::Ambiguous(_))
            && let Some(cycle) = self.unnamed.unanswered()
        {
            let _ = out.flush().await;
            self.progress.answered_beyond(cycle).await;
            self.settle_names();
        }
        // Every execution of a statement a policy held is judged (and held) again, and
        // so is one the current plugins never judged.
        let stale = |u: &Unnamed| u.judged.held || u.judged.generation != generation;
        let unnamed = match self.unnamed.runs(self.cycles) {
            Runs::Nothing => UnnamedBind::Free,
            Runs::One(u) if stale(u) => UnnamedBind::Judge(u.sql.clone()),
            Runs::One(_) => UnnamedBind::Free,
            Runs::Ambiguous(all) if all.iter().any(|u| stale(u)) => UnnamedBind::Unknown,
            Runs::Ambiguous(_) => UnnamedBind::Free,
        };
        let judged = judging
            && if statement.is_empty() {
                !matches!(unnamed, UnnamedBind::Free)
            } else {
                self.named.judged_at_bind(statement, generation)
            };
        // A name the gateway never saw prepared (or saw deallocated): Postgres may still
        // run something under it that nobody judged.
        let unknown = policies && !self.named.knows(statement);
        let bound = if judged {
            Bound::of(frame.body())
        } else {
            Bound::default()
        };
        self.last = Last::allowed();
        let mut refusal = if unknown {
            Some(Refusal::new(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                format!(
                    "sluice: prepared statement \"{statement}\" was not prepared through this session"
                ),
            ))
        } else if !judged {
            None
        } else if statement.is_empty() {
            match unnamed {
                UnnamedBind::Judge(sql) => {
                    self.check_text(sql.as_deref(), &bound, client, out).await
                }
                UnnamedBind::Unknown => Some(Refusal::new(
                    sqlstate::INSUFFICIENT_PRIVILEGE,
                    "sluice: which unnamed statement this Bind runs is not known (a request that parsed one failed): Parse it again",
                )),
                UnnamedBind::Free => None,
            }
        } else {
            // What the name means now (every definition Postgres may hold), judged
            // like an EXECUTE of it.
            self.check_bound(statement, &bound, client, out).await
        };
        if auditing {
            let decided = std::mem::take(&mut self.last.decided);
            let decided = refused_if(decided, &refusal);
            self.counts
                .count(&self.shared.metrics, "execute", decided.decision.as_str());
            let recorded = bind_params_recorded(frame.body()).unwrap_or_default();
            if let Err(e) = self
                .trail
                .bind(statement, portal.unwrap_or(""), &recorded, decided)
                .await
            {
                refusal = Some(audit_refusal(&e));
            }
        }
        match refusal {
            None => {
                let portal = portal.unwrap_or("");
                if let Some(tracker) = &mut self.tracker {
                    tracker.bound(portal, statement);
                }
                self.opaque.bound(portal, statement);
                // Judged now: what it runs is what the judging resolved; otherwise
                // every definition the name may have.
                let change = if judged {
                    self.last.names.clone()
                } else if statement.is_empty() {
                    match self.unnamed.runs(self.cycles) {
                        Runs::Nothing => Change::default(),
                        Runs::One(u) => u.names.clone(),
                        Runs::Ambiguous(all) => all
                            .iter()
                            .fold(Change::default(), |both, u| both.union(&u.names)),
                    }
                } else {
                    self.named.changes(statement)
                };
                self.names.bound(portal, change);
                let copies = if statement.is_empty() {
                    match self.unnamed.runs(self.cycles) {
                        Runs::Nothing => false,
                        Runs::One(u) => u.copy_in,
                        Runs::Ambiguous(all) => all.iter().any(|u| u.copy_in),
                    }
                } else {
                    self.named.may_copy_in(statement)
                };
                if copies {
                    self.copy_portals.insert(portal.to_owned());
                } else {
                    self.copy_portals.remove(portal);
                }
                self.send(out, frame.raw(), Request::Bind)
            }
            // Fails at the Bind's place; Postgres then skips to Sync.
            Some(refusal) => self.refuse_until_sync(out, "", &refusal),
        }
    }
}

/// What a Bind of the unnamed statement needs.
enum UnnamedBind {
    /// Nothing: no policy held it and the current plugins judged it.
    Free,
    /// Judging (and holding) again, as this text.
    Judge(Option<String>),
    /// Judging, but an earlier failed cycle leaves it unknown which text it runs.
    Unknown,
}
