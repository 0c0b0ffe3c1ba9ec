//! The per-statement check on the client → upstream path: analysis, the policy pipeline, and
//! the substitute sent in place of a refused message.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, mpsc};
use tracing::Instrument;

use super::Shared;
use super::masker::{Tracker, Unplannable};
use super::name_context::{Change, NameContext};
use super::opaque::OpaqueCode;
use super::prepared::{Judged, NamedStatements, pg_name};
use super::refusal::Refusals;
use super::session::Progress;
use super::trail::{Decided, Decision, Trail};
use super::unnamed::{Runs, Unnamed, UnnamedStatements};
use crate::analysis::{PreparedOp, Statement, Wrapper};
use crate::approvals::{self, ApprovalError, NewRequest, Opened, Routing};
use crate::masking;
use crate::plugins::{PluginHost, PluginSet, SessionMaskers, SessionPlugins, wit};
use crate::policy::{self, Decider, SessionInfo, Verdict};
use crate::state::Status;
use crate::wire::backend as messages;
use crate::wire::backend::Refusal;
use crate::wire::frame::{Frame, FrameReader, FrameWriter};
use crate::wire::frontend::{bind_params, bind_params_recorded, cstr};
use crate::wire::sqlstate;

/// Bytes a client may pipeline behind a held statement before the gateway stops reading it.
const HELD_BACKLOG: usize = 1 << 20;

/// How a session talks to its client and hears cancels while a statement waits for approval.
pub struct HoldSignals {
    /// Messages for the client, written by the upstream → client direction in between relayed
    /// ones.
    pub notices: mpsc::UnboundedSender<Bytes>,
    /// Notified when the client sends a CancelRequest for this session.
    pub cancelled: Arc<Notify>,
}

/// An unnamed statement's Parse, held until the next message: when that is its Bind, plugins
/// decide with the parameter values.
struct HeldParse {
    frame: Frame,
    sql: Option<String>,
}

pub struct Gate {
    shared: Arc<Shared>,
    info: SessionInfo,
    /// `None` when no plugin directory is configured.
    instances: Option<SessionPlugins>,
    refusals: Arc<Refusals>,
    /// ReadyForQuery-producing messages forwarded so far (Query, Sync, FunctionCall).
    cycles: u64,
    /// The last message processed closed a request cycle.
    between_cycles: bool,
    statements: u64,
    held: Option<HeldParse>,
    /// The unnamed statement Postgres may hold: when a policy held it, every later Bind of it
    /// needs its own decision.
    unnamed: UnnamedStatements,
    /// Parse, Bind, Execute, Describe or Close came since the last Sync.
    extended_open: bool,
    /// Portals bound to a statement that may be a COPY FROM STDIN.
    copy_portals: std::collections::HashSet<String>,
    /// A request cycle that may have started a COPY FROM STDIN whose start Postgres has not
    /// shown yet.
    copy_pending: Option<u64>,
    /// A message of this request cycle was refused: Postgres runs nothing more until Sync.
    failing: bool,
    /// Named prepared statements, so that EXECUTE (and a Bind of a SQL-prepared name) is
    /// judged as what it runs.
    named: NamedStatements,
    /// Where code the gateway cannot see into ran, so that nothing is read after it unchecked.
    opaque: OpaqueCode,
    /// The statements that changed what names mean (`search_path`, the role), shown to
    /// approvers and part of what a scoped grant covers.
    names: NameContext,
    signals: HoldSignals,
    trail: Trail,
    /// Announces answers to the masking side of the upstream direction (`None` without a
    /// plugin directory).
    tracker: Option<Tracker>,
    /// Masking plugin instances for the checks made before a statement runs.
    maskers: Option<SessionMaskers>,
    /// How the statement text last judged (or the execution last held) was decided, for its
    /// audit record.
    last: Last,
    /// Requests forwarded (written here), answered, and whether a COPY FROM STDIN is open (set
    /// by the upstream direction at CopyInResponse, cleared here when the client ends it).
    progress: Arc<Progress>,
    /// How long one statement may run on this database (zero: no budget).
    statement_budget: std::time::Duration,
}

/// The analysis and decision of the last statement text judged.
#[derive(Default)]
struct Last {
    statements: Option<Arc<[Statement]>>,
    decided: Decided,
    /// The text runs code the gateway cannot see into (`opaque.rs`).
    opaque: bool,
    /// What running it does to the settings names depend on (`name_context.rs`).
    names: Change,
}

impl Gate {
    pub fn new(
        shared: Arc<Shared>,
        info: SessionInfo,
        refusals: Arc<Refusals>,
        signals: HoldSignals,
        trail: Trail,
        tracker: Option<Tracker>,
        progress: Arc<Progress>,
    ) -> Gate {
        let statement_budget = shared
            .upstreams
            .get(&info.database)
            .map_or(std::time::Duration::ZERO, |u| u.statement_timeout());
        let instances = shared.plugins.clone().map(SessionPlugins::new);
        let maskers = shared.plugins.clone().map(SessionMaskers::new);
        Gate {
            trail,
            tracker,
            maskers,
            last: Last::default(),
            shared,
            info,
            instances,
            refusals,
            cycles: 0,
            between_cycles: true,
            statements: 0,
            held: None,
            unnamed: UnnamedStatements::default(),
            extended_open: false,
            copy_portals: std::collections::HashSet::new(),
            copy_pending: None,
            failing: false,
            named: NamedStatements::default(),
            opaque: OpaqueCode::default(),
            names: NameContext::default(),
            signals,
            progress,
            statement_budget,
        }
    }

    /// Nothing is in flight: the client's last message closed a request cycle (no
    /// Parse/Bind/Execute awaiting its Sync, no COPY data) and the upstream has answered all
    /// `cycles_done` of them.
    pub fn at_rest(&self, cycles_done: u64) -> bool {
        self.between_cycles && self.cycles == cycles_done
    }

    /// Statement texts judged so far.
    pub fn statements(&self) -> u64 {
        self.statements
    }

    fn policies_loaded(&self) -> bool {
        self.instances
            .as_ref()
            .is_some_and(|i| i.host().has_policies())
    }

    /// The serving plugin set's generation (read before judging: a reload after it only makes
    /// a later Bind judge again).
    fn generation(&self) -> u64 {
        self.instances.as_ref().map_or(0, |i| i.host().generation())
    }

    /// Queues on `out` what goes upstream for `frame` (possibly nothing yet, possibly a held
    /// message first).
    /// `client` is watched while a statement is held for approval, so that a client that
    /// leaves withdraws its request. An error is a protocol violation that ends the session.
    pub async fn process<W: AsyncWrite + Unpin, R: AsyncRead + Unpin>(
        &mut self,
        frame: &Frame,
        out: &mut FrameWriter<W>,
        client: &mut FrameReader<R>,
    ) -> Result<(), String> {
        if let Some(why) = super::strict::malformed(frame.tag(), frame.body()) {
            return Err(why.to_owned());
        }
        self.settle_names();
        // After a request cycle that ran opaque code, nothing goes upstream before its answer
        // (and any ParameterStatus in it) has been relayed and checked.
        if let Some(cycle) = self
            .opaque
            .waiting_for(self.progress.done.load(Ordering::Acquire))
        {
            // What is queued (the opaque cycle itself, perhaps) must go first, or nothing
            // answers. A failed write shows again at the session's own flush.
            let _ = out.flush().await;
            self.progress.answered_beyond(cycle).await;
        }
        // The gateway numbers request cycles by the ReadyForQuery each brings, and Postgres
        // answers a Sync during COPY FROM STDIN with nothing: before going on, it must know
        // whether a COPY it forwarded has begun. (Postgres shows either at once.)
        if let Some(cycle) = self.copy_pending.take() {
            let _ = out.flush().await;
            self.progress.copy_started_or_failed(cycle).await;
        }
        let copying = self.progress.copy_in.load(Ordering::Acquire);
        // Postgres ignores a Query or FunctionCall while it skips to Sync after an error, and
        // one during COPY ends the copy with an error: either would shift the numbering of
        // every later cycle, and with it which deallocations count. Drivers send neither.
        if matches!(frame.tag(), b'Q' | b'F') && (self.extended_open || copying) {
            return Err(format!(
                "{} received {}",
                if frame.tag() == b'Q' {
                    "Query"
                } else {
                    "FunctionCall"
                },
                if copying {
                    "during COPY FROM STDIN"
                } else {
                    "before Sync ended the extended-protocol messages sent before it"
                }
            ));
        }
        // Postgres ignores a Sync during COPY FROM STDIN: it closes no request cycle.
        let ignored_sync = frame.tag() == b'S' && copying;
        match frame.tag() {
            b'P' | b'B' | b'E' | b'D' | b'C' => self.extended_open = true,
            b'S' if !ignored_sync => self.extended_open = false,
            _ => {}
        }
        if matches!(frame.tag(), b'd' | b'c' | b'f') {
            if !copying {
                return Err(format!(
                    "{} received outside COPY FROM STDIN",
                    match frame.tag() {
                        b'd' => "CopyData",
                        b'c' => "CopyDone",
                        _ => "CopyFail",
                    }
                ));
            }
            if frame.tag() != b'd' {
                self.progress.copy_in.store(false, Ordering::Release);
            }
        }
        let at_boundary = self.between_cycles;
        self.between_cycles = matches!(frame.tag(), b'Q' | b'S' | b'F') && !ignored_sync;
        // The Bind an unnamed statement's approval was for, if this message is it.
        let mut covered_bind = false;
        if at_boundary {
            self.start_tracking();
        }
        if let Some(held) = self.held.take() {
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
                .record_text("parse", held.sql.as_deref(), &bound.shown, refusal)
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
                    out.queue(held.frame.raw())
                }
                Some(Refusal {
                    sqlstate: code,
                    message,
                }) => {
                    self.trail.refused_parse("");
                    out.queue(&self.refused_until_sync("", code, &message))
                }
            }
        }
        let auditing = self.trail.enabled();
        match frame.tag() {
            b'Q' => {
                let sql = cstr(frame.body()).0;
                let refusal = self.check_text(sql, &Bound::default(), client, out).await;
                let (refusal, id) = self.record_text("query", sql, &[], refusal).await;
                match refusal {
                    None => {
                        if auditing {
                            let parts = self.last.statements.as_ref().map_or(1, |s| s.len());
                            self.trail.expect_query(id, parts);
                        }
                        if let Some(tracker) = &mut self.tracker {
                            tracker.query(self.last.statements.as_deref().unwrap_or_default());
                        }
                        self.forwarded(true);
                        self.opaque.queried(self.last.opaque);
                        self.names.queried(&self.last.names);
                        if self.last_copies_in() {
                            self.copy_pending = Some(self.cycles);
                        }
                        out.queue(frame.raw())
                    }
                    Some(Refusal {
                        sqlstate: code,
                        message,
                    }) => out.queue(&self.refusals.query(self.cycles, code, &message)),
                }
            }
            // A Parse after opaque code in the same cycle could be read under settings that code
            // changed, which Postgres reports only at the cycle's end.
            b'P' if self.opaque.parse_refused() => {
                let name = pg_name(cstr(frame.body()).0.unwrap_or(""));
                out.queue(&self.refused_until_sync(
                    name,
                    sqlstate::INSUFFICIENT_PRIVILEGE,
                    "sluice: a Parse may not follow the execution of a DO block, CALL or user-defined function before Sync: send Sync after it",
                ))
            }
            b'P' => {
                let (name, rest) = cstr(frame.body());
                let sql = cstr(rest).0;
                if name == Some("") && self.policies_loaded() {
                    self.held = Some(HeldParse {
                        frame: frame.clone(),
                        sql: sql.map(str::to_owned),
                    });
                    return Ok(());
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
                let (refusal, id) = self.record_text("parse", sql, &[], refusal).await;
                match refusal {
                    None => {
                        self.trail
                            .prepared(name, id, self.last.statements.as_deref());
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
                            self.named.parsed(
                                name,
                                sql.unwrap_or(""),
                                judged,
                                self.last.names.clone(),
                            );
                        }
                        out.queue(frame.raw())
                    }
                    Some(Refusal {
                        sqlstate: code,
                        message,
                    }) => {
                        self.trail.refused_parse(name);
                        out.queue(&self.refused_until_sync(name, code, &message))
                    }
                }
            }
            // Bind is per execution: the statement name is only read once some named
            // statement in this session needs approval, or for the audit record.
            // Nothing to check at a Bind: no policy, no audit record, no masking.
            b'B' if !self.policies_loaded() && !auditing && !self.tracking() => {
                out.queue(frame.raw())
            }
            b'B' => {
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
                self.last = Last {
                    statements: None,
                    decided: Decided {
                        decision: Decision::Allow,
                        ..Decided::default()
                    },
                    opaque: false,
                    names: Change::default(),
                };
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
                    self.shared
                        .metrics
                        .statement("execute", decided.decision.as_str());
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
                        out.queue(frame.raw())
                    }
                    // Fails at the Bind's place; Postgres then skips to Sync.
                    Some(Refusal {
                        sqlstate: code,
                        message,
                    }) => out.queue(&self.refused_until_sync("", code, &message)),
                }
            }
            b'E' => {
                let portal = cstr(frame.body()).0.unwrap_or("");
                if self.copy_portals.contains(portal) {
                    self.copy_pending = Some(self.cycles);
                }
                self.opaque.executed(portal);
                self.names.executed(portal);
                if auditing {
                    self.trail.expect_execute(portal);
                }
                if let Some(tracker) = &mut self.tracker {
                    tracker.execute(portal, out);
                }
                out.queue(frame.raw())
            }
            b'D' => {
                if let Some(tracker) = &mut self.tracker {
                    tracker.describe(frame.body());
                }
                out.queue(frame.raw())
            }
            b'C' => {
                if let Some((&b'S', name)) = frame.body().split_first() {
                    // Forgotten once Postgres has answered the cycle without an error.
                    let name = cstr(name).0.unwrap_or("");
                    self.named.closed(name, self.cycles);
                    self.progress.forgets_pending.store(true, Ordering::Release);
                }
                if let Some(tracker) = &mut self.tracker {
                    tracker.close(frame.body());
                }
                out.queue(frame.raw());
            }
            // The fast-path function call bypasses SQL entirely, so nothing can check it.
            b'F' => out.queue(&self.refusals.query(
                self.cycles,
                sqlstate::INSUFFICIENT_PRIVILEGE,
                "sluice: the FunctionCall protocol message is not allowed",
            )),
            _ => out.queue(frame.raw()),
        }
        if self.between_cycles {
            self.failing = false;
            self.opaque.cycle_closed(self.cycles);
            if auditing {
                self.trail.expect_cycle_end();
            }
            if let Some(tracker) = &self.tracker {
                tracker.cycle_end();
            }
            self.cycles += 1;
            self.progress.sent.store(self.cycles, Ordering::Release);
        }
        Ok(())
    }

    /// The substitute for a refused extended-protocol message (named `name`, for a Parse):
    /// Postgres fails at it and discards everything up to Sync.
    fn refused_until_sync(&mut self, name: &str, code: &str, message: &str) -> Bytes {
        self.failing = true;
        self.refusals.parse(self.cycles, name, code, message)
    }

    /// Whether the statement text last judged starts a COPY FROM STDIN.
    fn last_copies_in(&self) -> bool {
        self.last.statements.as_deref().is_some_and(|s| {
            s.iter()
                .any(|s| s.kind == crate::analysis::StatementKind::CopyIn)
        })
    }

    fn tracking(&self) -> bool {
        self.tracker.as_ref().is_some_and(Tracker::on)
    }

    /// Starts masking's tracking at this request-cycle boundary once a masking plugin serves.
    fn start_tracking(&mut self) {
        let serving = self
            .shared
            .plugins
            .as_ref()
            .is_some_and(|h| h.has_maskers());
        if let Some(tracker) = &mut self.tracker
            && !tracker.on()
            && serving
        {
            tracker.start(self.cycles);
        }
    }

    /// A Parse of `name` (the statement text last judged) went upstream.
    fn track_parse(&mut self, name: &str) {
        if let Some(tracker) = &mut self.tracker {
            let statement = self.last.statements.as_deref().and_then(<[_]>::first);
            tracker.parsed(name, statement);
        }
    }

    /// Why masking refuses one of `statements` before it runs: a FETCH or EXECUTE whose rows
    /// nothing can account for, or values of masked columns leaving by COPY or a write.
    async fn masking_refusal(&mut self, statements: &[Statement]) -> Option<String> {
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
            let uses = match (statement.command.as_str(), &statement.prepared) {
                ("FetchStmt", _) => statement.cursor.as_deref(),
                ("ExecuteStmt", Some(PreparedOp::Execute(name))) => Some(name.as_str()),
                _ => None,
            };
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
    async fn record_text(
        &mut self,
        protocol: &'static str,
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
                    metrics.statement(statement.kind.label(), decided.decision.as_str());
                }
            }
            None => metrics.statement("unanalysed", decided.decision.as_str()),
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
    async fn check_text<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
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
    async fn judge(&mut self, sql: Option<&str>, params: &[Option<String>]) -> Judgement {
        self.last = Last {
            statements: None,
            decided: Decided {
                decision: Decision::Allow,
                ..Decided::default()
            },
            opaque: false,
            names: Change::default(),
        };
        // No plugin directory, or one with no policy in it: nobody objects.
        let plugins = self
            .instances
            .as_ref()
            .map(|i| i.host().current())
            .filter(|p| p.guards());
        let auditing = self.trail.enabled();
        let masking = self.tracking();
        if plugins.is_none() && !auditing && !masking {
            return Judgement::Pass;
        }
        self.statements += 1;
        let span = tracing::debug_span!("statement", sluice.statement = self.statements);
        let Some(sql) = sql else {
            if plugins.is_none() && !masking {
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
            Err(_) if plugins.is_none() && !masking => return Judgement::Pass,
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
        // Postgres must go on reading the bytes as the gateway does, and stopping statements
        // at the budget.
        let budget = self.statement_budget;
        if let Some(why) = resolved.iter().flat_map(|s| &s.settings).find_map(|c| {
            super::reading::refused_change(c).or_else(|| super::runaway::refused_change(c, budget))
        }) {
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
    async fn check_bound<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
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
    async fn decide(
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

    /// The statement text last judged went upstream, to run (`runs`: a Query) or to be
    /// prepared (a Parse): what it prepares defines the session's names now, what it
    /// deallocates once Postgres has answered.
    fn forwarded(&mut self, runs: bool) {
        if let Some(statements) = &self.last.statements {
            self.named.forwarded(statements, self.cycles, runs);
            if self.named.has_pending() {
                self.progress.forgets_pending.store(true, Ordering::Release);
            }
        }
    }

    /// Applies the deallocations Postgres has answered without an error.
    fn settle_names(&mut self) {
        if !self.named.has_pending() && !self.unnamed.has_pending() {
            return;
        }
        let answered = self.progress.done.load(Ordering::Acquire);
        // A poisoned lock cannot tell which cycles failed: settle nothing.
        let Ok(mut failed) = self.progress.failed_cycles.lock() else {
            return;
        };
        self.named.settle(answered, |cycle| failed.contains(&cycle));
        self.unnamed
            .settle(answered, |cycle| failed.contains(&cycle));
        // Both have taken what the answered cycles told them.
        failed.retain(|cycle| *cycle >= answered);
        if !self.named.has_pending() && !self.unnamed.has_pending() {
            self.progress
                .forgets_pending
                .store(false, Ordering::Release);
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

/// What the policies said about a statement text.
enum Judgement {
    Pass,
    Refuse(Refusal),
    Approval(Arc<NeedsApproval>),
}

/// A statement text a policy sends for approval.
struct NeedsApproval {
    decider: Decider,
    /// What the approvers are shown.
    sql: String,
    statements: Arc<[Statement]>,
    /// The plugin set that asked for approval: another set decides again before it runs.
    generation: u64,
    span: tracing::Span,
}

impl Gate {
    /// Holds a statement until approvers decide, the request expires, or the client cancels or
    /// leaves. `None` lets it through.
    async fn hold<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
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
    async fn recheck(&mut self, approval: &NeedsApproval, bound: &Bound) -> Option<Refusal> {
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

    async fn hold_in_span<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
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
    fn routing_request(
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
            session: self.info.clone(),
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

/// What the database's catalog adds to `statements`: each one calling a user-defined function
/// declared VOLATILE is marked as writing; and whether they run code the gateway cannot see
/// into (a DO block, CALL, or any user-defined function). Without a readable catalog, any
/// function not qualified `pg_catalog.` counts as both. Not a method: a `&Gate` held across the
/// catalog read would require the session's plugin stores to be `Sync`.
async fn catalog_facts(
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
    // Without a catalog, any function that is not plainly a built-in counts as user-defined
    // and volatile; so does one the catalog read does not know (created since, perhaps in
    // this very transaction).
    let user = |f: &str| match &snapshot {
        Some(snapshot) => snapshot.user_function(f) || !snapshot.known_function(f),
        None => !f.starts_with("pg_catalog."),
    };
    let volatile = |f: &str| match &snapshot {
        Some(snapshot) => snapshot.volatile_user_function(f) || !snapshot.known_function(f),
        None => !f.starts_with("pg_catalog."),
    };
    for statement in statements.iter_mut() {
        let found: Vec<crate::analysis::FunctionFacts> = statement
            .functions
            .iter()
            .filter(|f| user(f))
            .map(|f| crate::analysis::FunctionFacts {
                name: f.clone(),
                volatile: volatile(f),
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

/// A decision as recorded, given what actually happened to the message.
fn refused_if(mut decided: Decided, refusal: &Option<Refusal>) -> Decided {
    if let Some(Refusal {
        sqlstate: code,
        message,
    }) = refusal
    {
        if decided.allowed() || decided.decision == Decision::Undecided {
            decided.decision = if *code == sqlstate::INSUFFICIENT_PRIVILEGE {
                Decision::Deny
            } else {
                Decision::Error
            };
        }
        decided.reason.get_or_insert_with(|| message.clone());
    }
    decided
}

fn audit_refusal(e: &crate::audit::AuditError) -> Refusal {
    tracing::error!(error = %e, "statement refused: the audit log cannot take its record");
    Refusal::new(
        sqlstate::IO_ERROR,
        "sluice: the audit log cannot be written; statement refused (audit.on_failure = \"refuse\")",
    )
}

/// A Bind's parameter values, for the plugins and for people.
#[derive(Default)]
struct Bound {
    /// As text, `None` for NULL and binary-format values (what policy plugins are given).
    text: Vec<Option<String>>,
    /// As approvers and the audit record see them: binary values as `\x` and hex.
    shown: Vec<Option<String>>,
}

impl Bound {
    /// The values of Bind message `body` (none if it is malformed: Postgres rejects it).
    fn of(body: &[u8]) -> Bound {
        Bound {
            text: bind_params(body).unwrap_or_default(),
            shown: bind_params_recorded(body).unwrap_or_default(),
        }
    }
}

/// The statement name a Bind message binds.
fn bound_statement(body: &[u8]) -> Option<&str> {
    cstr(cstr(body).1).0.map(pg_name)
}
