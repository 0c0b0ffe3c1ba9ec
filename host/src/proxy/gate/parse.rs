//! Parse: a named statement is judged once, here, and keeps its decision; the unnamed one is
//! held until the next message, so that when that is its Bind the plugins decide with the
//! parameter values.

use super::*;

impl Gate {
    /// A Parse from the client.
    pub(super) async fn parse<W: AsyncWrite + Unpin>(
        &mut self,
        frame: &Frame,
        out: &mut FrameWriter<W>,
    ) {
        // A Parse after opaque code in the same cycle could be read under settings that code
        // changed, which Postgres reports only at the cycle's end.
        if self.opaque.parse_refused() {
            let name = pg_name(cstr(frame.body()).0.unwrap_or(""));
            let refusal = Refusal::new(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                "sluice: a Parse may not follow the execution of a DO block, CALL or user-defined function before Sync: send Sync after it",
            );
            self.refuse_until_sync(out, name, &refusal);
            return;
        }
        let (name, rest) = cstr(frame.body());
        let sql = cstr(rest).0;
        if name == Some("") && self.policies_loaded() {
            self.held = Some(HeldParse {
                frame: frame.clone(),
                sql: sql.map(str::to_owned),
            });
            return;
        }
        let name = name.map(pg_name);
        // A named statement is decided once, here, and keeps that decision; one that
        // needs approval is prepared now and held at each Bind, with its parameters.
        let name = name.unwrap_or("");
        let mut refusal = None;
        let generation = self.generation();
        let mut held = false;
        match self.judge(sql, &[]).await {
            Judgement::Pass => {}
            Judgement::Refuse(r) => refusal = Some(r),
            Judgement::Approval(_) => {
                // Preparing runs nothing: each Bind is judged again, held and
                // recorded, as what the name then means.
                held = true;
                self.last.decided.decision = Decision::Allow;
            }
        }
        let judged = Judged { generation, held };
        let (refusal, id) = self
            .record_text(crate::audit::Protocol::Parse, sql, &[], refusal)
            .await;
        match refusal {
            None => {
                // A Parse Postgres skips (an error earlier in the pipeline) changes nothing
                // it holds under the name.
                if !self.failing {
                    self.trail
                        .prepared(name, id, self.last.statements.as_deref());
                }
                self.track_parse(name);
                self.forwarded(false);
                self.opaque.parsed(name, self.last.opaque);
                if name.is_empty() && !self.failing {
                    let copy_in = self.last_copies_in();
                    self.unnamed.parsed(
                        self.cycles,
                        Unnamed {
                            sql: sql.map(str::to_owned),
                            judged,
                            copy_in,
                            names: self.last.names.clone(),
                        },
                    );
                    self.progress.forgets_pending.store(true, Ordering::Release);
                } else if !name.is_empty() {
                    self.named
                        .parsed(name, sql.unwrap_or(""), judged, self.last.names.clone());
                }
                self.send(out, frame.raw(), Request::Parse)
            }
            Some(refusal) => {
                self.trail.refused_parse(name);
                self.refuse_until_sync(out, name, &refusal)
            }
        }
    }

    /// Decides the unnamed statement's Parse held until `frame` arrived, and queues it (or
    /// its refusal). Returns whether `frame` is the Bind its approval was for.
    pub(super) async fn decide_held_parse<W: AsyncWrite + Unpin, R: AsyncRead + Unpin>(
        &mut self,
        held: HeldParse,
        frame: &Frame,
        out: &mut FrameWriter<W>,
        client: &mut FrameReader<R>,
    ) -> bool {
        let mut covered_bind = false;
        // The held Parse is decided now, with this Bind's parameters if it binds it: the
        // approval is for that execution. Without one, preparing runs nothing, and each
        // Bind is held instead.
        let binds_it = frame.tag() == b'B' && bound_statement(frame.body()) == Some("");
        let bound = if binds_it {
            Bound::of(frame.body())
        } else {
            Bound::default()
        };
        let generation = self.generation();
        let (refusal, approval) = match self.judge(held.sql.as_deref(), &bound.text).await {
            Judgement::Pass => (None, false),
            Judgement::Refuse(refusal) => (Some(refusal), false),
            Judgement::Approval(approval) if binds_it => {
                (self.hold(&approval, &bound, client, out).await, true)
            }
            Judgement::Approval(_) => {
                self.last.decided.decision = Decision::Allow;
                (None, true)
            }
        };
        let (refusal, id) = self
            .record_text(
                crate::audit::Protocol::Parse,
                held.sql.as_deref(),
                &bound.shown,
                refusal,
            )
            .await;
        match refusal {
            None => {
                self.trail.prepared("", id, self.last.statements.as_deref());
                self.track_parse("");
                self.forwarded(false);
                self.opaque.parsed("", self.last.opaque);
                // In a cycle the gateway already failed, Postgres skips the Parse.
                if !self.failing {
                    let copy_in = self.last_copies_in();
                    self.unnamed.parsed(
                        self.cycles,
                        Unnamed {
                            sql: held.sql,
                            judged: Judged {
                                generation,
                                held: approval,
                            },
                            copy_in,
                            names: self.last.names.clone(),
                        },
                    );
                    self.progress.forgets_pending.store(true, Ordering::Release);
                    covered_bind = binds_it && approval;
                }
                self.send(out, held.frame.raw(), Request::Parse)
            }
            Some(refusal) => {
                self.trail.refused_parse("");
                self.refuse_until_sync(out, "", &refusal)
            }
        }
        covered_bind
    }
}

/// The statement name a Bind message binds.
fn bound_statement(body: &[u8]) -> Option<&str> {
    cstr(cstr(body).1).0.map(pg_name)
}
