//! The per-statement check on the client → upstream path. `process` takes each client message
//! in order: what it means for the session's state (request cycles, COPY, opaque code), then
//! the message itself — Query here, Parse (`parse.rs`), Bind (`bind.rs`), Execute, Describe and
//! Close (`execute.rs`) — and every message Postgres answers is announced to the pipeline as it
//! is queued upstream. How a statement is judged (`judge.rs`: analysis, catalog facts, masking
//! checks, the policy pipeline), held for approval (`hold.rs`), or refused (`refusal.rs`: the
//! substitute that fails upstream in its place); and the state that lets the gateway read the
//! session as Postgres does (`prepared.rs`, `unnamed.rs`, `opaque.rs`, `name_context.rs`).

mod bind;
mod execute;
mod hold;
mod judge;
mod name_context;
mod opaque;
mod parse;
mod prepared;
pub(super) mod refusal;
mod strict;
mod unnamed;

use hold::NeedsApproval;
use judge::{Judgement, Last};

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, mpsc};
use tracing::Instrument;

use super::masker::{Tracker, Unplannable};
use super::pipeline::{self, Request, Requests, Target};
use super::session::progress::Progress;
use super::trail::{Decided, Decision, Trail};
use crate::analysis::{PreparedOp, Statement, Wrapper};
use crate::approvals;
use crate::identity::SessionInfo;
use crate::masking;
use crate::plugins::{PluginSet, SessionMaskers, SessionPlugins};
use crate::policy::{self, Decider, Verdict};
use crate::proxy::shared::Shared;
use crate::wire::backend::Refusal;
use crate::wire::frame::{Frame, FrameReader, FrameWriter};
use crate::wire::frontend::pg_name;
use crate::wire::frontend::{bind_params, bind_params_recorded, cstr};
use crate::wire::sqlstate;
use name_context::{Change, NameContext};
use opaque::OpaqueCode;
use prepared::{Judged, NamedStatements};
use unnamed::{Runs, Unnamed, UnnamedStatements};

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
    /// Announces each message queued upstream that Postgres answers, in order.
    requests: Requests,
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
    counts: crate::metrics::StatementCounts,
}

impl Gate {
    pub fn new(
        shared: Arc<Shared>,
        info: SessionInfo,
        requests: Requests,
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
            requests,
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
            counts: Default::default(),
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
        if let Some(why) = strict::malformed(frame.tag(), frame.body()) {
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
            covered_bind = self.decide_held_parse(held, frame, out, client).await;
        }
        let auditing = self.trail.enabled();
        match frame.tag() {
            b'Q' => {
                let sql = cstr(frame.body()).0;
                let refusal = self.check_text(sql, &Bound::default(), client, out).await;
                let (refusal, id) = self
                    .record_text(crate::audit::Protocol::Query, sql, &[], refusal)
                    .await;
                match refusal {
                    None => {
                        let statements = self.last.statements.as_deref();
                        let query = pipeline::Query {
                            // An empty query string is answered too (EmptyQueryResponse).
                            parts: statements.map(|s| s.len().max(1) as u32),
                            record: auditing.then(|| pipeline::Record::now(id)),
                            sources: self
                                .tracker
                                .as_mut()
                                .and_then(|t| t.query(statements.unwrap_or_default())),
                        };
                        self.forwarded(true);
                        self.opaque.queried(self.last.opaque);
                        self.names.queried(&self.last.names);
                        if self.last_copies_in() {
                            self.copy_pending = Some(self.cycles);
                        }
                        self.send(out, frame.raw(), Request::Query(query))
                    }
                    Some(refusal) => {
                        let (substitute, request) = refusal::query(&refusal);
                        self.send(out, &substitute, request)
                    }
                }
            }
            b'P' => self.parse(frame, out).await,
            // Bind is per execution: the statement name is only read once some named
            // statement in this session needs approval, or for the audit record.
            // Nothing to check at a Bind: no policy, no audit record, no masking.
            b'B' if !self.policies_loaded() && !auditing && !self.tracking() => {
                self.send(out, frame.raw(), Request::Bind)
            }
            b'B' => self.bind(frame, out, client, covered_bind).await,
            b'E' => self.execute(frame, out),
            b'D' => self.describe(frame, out)?,
            b'C' => self.close(frame, out)?,
            // The fast-path function call bypasses SQL entirely, so nothing can check it.
            b'F' => {
                let (substitute, request) = refusal::query(&Refusal::new(
                    sqlstate::INSUFFICIENT_PRIVILEGE,
                    "sluice: the FunctionCall protocol message is not allowed",
                ));
                self.send(out, &substitute, request)
            }
            // Sync (its ReadyForQuery is announced below), Flush, and COPY data, which
            // Postgres does not answer on their own.
            _ => out.queue(frame.raw()),
        }
        if self.between_cycles {
            self.failing = false;
            self.opaque.cycle_closed(self.cycles);
            self.requests.announce(Request::Ready);
            self.trail.cycle_closed();
            self.cycles += 1;
            self.progress.sent.store(self.cycles, Ordering::Release);
        }
        Ok(())
    }

    /// Queues `message` upstream and announces what Postgres will answer to it.
    fn send<W: AsyncWrite + Unpin>(
        &self,
        out: &mut FrameWriter<W>,
        message: &[u8],
        request: Request,
    ) {
        out.queue(message);
        self.requests.announce(request);
    }

    /// Queues the substitute for a refused extended-protocol message (named `name`, for a
    /// Parse): Postgres fails at it and discards everything up to Sync.
    fn refuse_until_sync<W: AsyncWrite + Unpin>(
        &mut self,
        out: &mut FrameWriter<W>,
        name: &str,
        refusal: &Refusal,
    ) {
        self.failing = true;
        let (substitute, request) = refusal::parse(name, refusal);
        self.send(out, &substitute, request);
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
            tracker.start();
        }
    }

    /// A Parse of `name` (the statement text last judged) went upstream.
    fn track_parse(&mut self, name: &str) {
        if let Some(tracker) = &mut self.tracker {
            let statement = self.last.statements.as_deref().and_then(<[_]>::first);
            tracker.parsed(name, statement);
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
