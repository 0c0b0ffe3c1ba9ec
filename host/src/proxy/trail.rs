//! A session's audit trail: the record of each statement text decided (Query, Parse) and of
//! each execution of a prepared statement (Bind), written before the message goes upstream,
//! and the result of each statement that went, matched to the upstream's answers in order.
//!
//! Matching: the client direction announces, in the order it forwards them, each statement
//! that will produce a result (every statement of a Query, every Execute) and the end of each
//! request cycle (Query, Sync, FunctionCall). The upstream direction pairs CommandComplete,
//! EmptyQueryResponse and PortalSuspended with the oldest announced statement, an
//! ErrorResponse with it as failed, and at ReadyForQuery records the statements of the cycle
//! that never answered as skipped (Postgres skips the rest of a query string or of a pipeline
//! after an error).
//!
//! With fsync durability, a statement that cannot change anything by running now (see
//! [`Effect`]) is forwarded once its record is written, and the upstream direction holds rows
//! for the client until that record is on disk ([`Results::answerable`]). Whether
//! the session is in a transaction block comes from the last ReadyForQuery, trusted only for the
//! first statement of a request cycle that starts with every earlier cycle answered.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;

use crate::analysis::{Effect, Statement};
use crate::audit::{Audit, AuditError, Event, StatementRecord};
pub use crate::audit::{Decided, Decision};
use crate::config::StatementText;
use crate::identity::SessionInfo;

/// What the upstream direction should expect next.
#[derive(Debug)]
pub enum Expect {
    /// A statement that will answer (or be skipped): its record number and its part of a
    /// multi-statement Query.
    Statement {
        statement: u64,
        part: u32,
        started: Instant,
    },
    /// The ReadyForQuery ending a request cycle.
    CycleEnd,
}

/// What both halves share.
#[derive(Default)]
struct Common {
    /// Log bytes that must be on disk before anything more reaches the client.
    hold: AtomicU64,
    /// ReadyForQuery messages seen (upper bits) and the last one's transaction status (low
    /// byte).
    position: AtomicU64,
}

fn position(cycles_done: u64, status: u8) -> u64 {
    cycles_done << 8 | u64::from(status)
}

/// The client direction's half.
pub struct Trail {
    audit: Arc<Audit>,
    info: SessionInfo,
    expect: mpsc::UnboundedSender<Expect>,
    common: Arc<Common>,
    next: u64,
    /// Prepared statement name → its Parse's record number and its statements' effect.
    prepared: HashMap<String, (u64, Effect)>,
    /// Portal name → its Bind's record number.
    portals: HashMap<String, u64>,
    /// Request cycles announced so far.
    cycles: u64,
    /// No statement was recorded yet in the cycle the client is sending now.
    cycle_fresh: bool,
}

impl Trail {
    /// The trail and the receiver the upstream direction reads expectations from (`None`
    /// when auditing is off: nothing is tracked).
    pub fn new(audit: Arc<Audit>, info: SessionInfo) -> (Trail, Option<Results>) {
        let (expect, expected) = mpsc::unbounded_channel();
        let common = Arc::new(Common {
            hold: AtomicU64::new(0),
            position: AtomicU64::new(position(0, b'I')),
        });
        let results = audit.enabled().then(|| Results {
            audit: audit.clone(),
            session: info.id,
            expected,
            pending: VecDeque::new(),
            common: common.clone(),
            cycles_done: 0,
            answerable: 0,
        });
        let trail = Trail {
            audit,
            info,
            expect,
            common,
            next: 0,
            prepared: HashMap::new(),
            portals: HashMap::new(),
            cycles: 0,
            cycle_fresh: true,
        };
        (trail, results)
    }

    pub fn enabled(&self) -> bool {
        self.audit.enabled()
    }

    /// Records a statement text (`query` or `parse`); durable first if it is allowed to run.
    /// Returns its record number.
    pub async fn text(
        &mut self,
        protocol: &'static str,
        text: Option<&str>,
        statements: Option<&[Statement]>,
        params: &[Option<String>],
        decided: Decided,
    ) -> Result<u64, AuditError> {
        self.next += 1;
        let statement = self.next;
        let normalized = self.audit.statement_text == StatementText::Normalized;
        // Preparing runs nothing; a Query runs every statement in it.
        let at_once = protocol != "parse" && effect_of(statements).at_once(self.in_block());
        let statements = statements.unwrap_or_default();
        let allowed = decided.allowed();
        let record = StatementRecord {
            text: text.map(|t| self.audit.text(t)),
            kinds: statements.iter().map(|s| s.kind.label()).collect(),
            tables_read: statements
                .iter()
                .flat_map(|s| &s.tables_read)
                .map(ToString::to_string)
                .collect(),
            tables_written: statements
                .iter()
                .flat_map(|s| &s.tables_written)
                .map(ToString::to_string)
                .collect(),
            params: (!normalized && !params.is_empty()).then(|| params.to_vec()),
            ..self.record(statement, protocol, decided)
        };
        self.write(record, allowed, at_once).await?;
        Ok(statement)
    }

    /// A Parse of `statements` (`None`: not analysed) went upstream under `name`.
    pub fn prepared(&mut self, name: &str, record: u64, statements: Option<&[Statement]>) {
        self.prepared
            .insert(name.to_owned(), (record, effect_of(statements)));
    }

    /// Whether the session is inside a transaction block as the statement being recorded now
    /// runs: known only when every earlier request cycle has been answered and nothing else
    /// ran in this one yet (a COMMIT earlier in a pipeline ends the block it started in).
    fn in_block(&self) -> bool {
        let now = self.common.position.load(Ordering::Acquire);
        self.cycle_fresh && now >> 8 == self.cycles && matches!((now & 0xff) as u8, b'T' | b'E')
    }

    /// A Parse under `name` was refused: what Postgres holds under it is nothing we recorded.
    pub fn refused_parse(&mut self, name: &str) {
        self.prepared.remove(name);
    }

    /// Records one execution of the statement prepared as `name`, bound to `portal`.
    pub async fn bind(
        &mut self,
        name: &str,
        portal: &str,
        params: &[Option<String>],
        decided: Decided,
    ) -> Result<(), AuditError> {
        self.next += 1;
        let statement = self.next;
        let normalized = self.audit.statement_text == StatementText::Normalized;
        let allowed = decided.allowed();
        let (prepared, effect) = match self.prepared.get(name) {
            Some(&(record, effect)) => (Some(record), effect),
            None => (None, Effect::AtOnce),
        };
        let at_once = effect.at_once(self.in_block());
        let record = StatementRecord {
            prepared,
            params: (!normalized).then(|| params.to_vec()),
            ..self.record(statement, "bind", decided)
        };
        let written = self.write(record, allowed, at_once).await;
        if allowed && written.is_ok() {
            match self.portals.get_mut(portal) {
                Some(bound) => *bound = statement,
                None => {
                    self.portals.insert(portal.to_owned(), statement);
                }
            }
        } else {
            // A refused Bind leaves no portal of ours: an Execute of the name must not be
            // paired with an earlier execution.
            self.portals.remove(portal);
        }
        written
    }

    /// A record of this session's statement number `statement`, decided as `decided`, with
    /// nothing about the statement itself yet.
    fn record(&self, statement: u64, protocol: &'static str, decided: Decided) -> StatementRecord {
        StatementRecord {
            session: self.info.id,
            subject: self.info.subject.clone(),
            database: self.info.database.clone(),
            statement,
            protocol,
            prepared: None,
            text: None,
            kinds: Vec::new(),
            tables_read: Vec::new(),
            tables_written: Vec::new(),
            decided,
            params: None,
        }
    }

    /// Writes a statement's record: for one allowed to run, durable before it is forwarded
    /// when running it can change something (`at_once`), else before its answer is relayed.
    async fn write(
        &mut self,
        record: StatementRecord,
        allowed: bool,
        at_once: bool,
    ) -> Result<(), AuditError> {
        // A Query or a Bind runs as it goes upstream; a Parse only prepares.
        if record.protocol != "parse" {
            self.cycle_fresh = false;
        }
        let event = Event::Statement(Box::new(record));
        if !allowed {
            self.audit.record(event);
            return Ok(());
        }
        if at_once {
            return self.audit.durable(event).await;
        }
        let bytes = self.audit.durable_before_answer(event).await?;
        self.common.hold.fetch_max(bytes, Ordering::AcqRel);
        Ok(())
    }

    /// Statement `statement` (with `parts` statements) went upstream in a Query.
    pub fn expect_query(&self, statement: u64, parts: usize) {
        let started = Instant::now();
        for part in 0..parts.max(1) {
            let _ = self.expect.send(Expect::Statement {
                statement,
                part: part as u32,
                started,
            });
        }
    }

    /// An Execute of `portal` went upstream.
    pub fn expect_execute(&self, portal: &str) {
        if let Some(&statement) = self.portals.get(portal) {
            let _ = self.expect.send(Expect::Statement {
                statement,
                part: 0,
                started: Instant::now(),
            });
        }
    }

    /// A Query, Sync or FunctionCall went upstream: a ReadyForQuery will end its cycle.
    pub fn expect_cycle_end(&mut self) {
        self.cycles += 1;
        self.cycle_fresh = true;
        let _ = self.expect.send(Expect::CycleEnd);
    }
}

/// The strongest effect among `statements`; not analysed: anything.
fn effect_of(statements: Option<&[Statement]>) -> Effect {
    match statements {
        Some(statements) => statements
            .iter()
            .map(|s| s.effect)
            .max()
            .unwrap_or(Effect::None),
        None => Effect::AtOnce,
    }
}

/// The upstream direction's half: pairs answers with announced statements.
pub struct Results {
    audit: Arc<Audit>,
    session: u64,
    expected: mpsc::UnboundedReceiver<Expect>,
    pending: VecDeque<Expect>,
    common: Arc<Common>,
    cycles_done: u64,
    /// Log bytes known to be on disk already.
    answerable: u64,
}

impl Results {
    /// Returns once the rows queued for the client may go: the records of the statements
    /// forwarded without waiting for the disk are on it. An error: they may never be.
    pub async fn answerable(&mut self) -> Result<(), AuditError> {
        let hold = self.common.hold.load(Ordering::Acquire);
        if hold > self.answerable {
            self.audit.answerable(hold).await?;
            self.answerable = hold;
        }
        Ok(())
    }

    fn refill(&mut self) {
        while let Ok(expect) = self.expected.try_recv() {
            self.pending.push_back(expect);
        }
    }

    /// The record number of the statement the upstream is answering now, if known.
    pub fn current_statement(&mut self) -> Option<u64> {
        self.refill();
        match self.pending.front() {
            Some(Expect::Statement { statement, .. }) => Some(*statement),
            _ => None,
        }
    }

    /// Looks at one message from the upstream.
    pub fn saw(&mut self, tag: u8, body: &[u8]) {
        match tag {
            b'C' | b'I' | b's' | b'E' => {
                self.refill();
                let Some(Expect::Statement { .. }) = self.pending.front() else {
                    return;
                };
                let Some(Expect::Statement {
                    statement,
                    part,
                    started,
                }) = self.pending.pop_front()
                else {
                    return;
                };
                let (outcome, tag_text, sqlstate) = match tag {
                    b'C' => (
                        "ok",
                        crate::wire::frontend::cstr(body).0.map(str::to_owned),
                        None,
                    ),
                    b'E' => ("error", None, crate::wire::backend::error_field(body, b'C')),
                    b's' => ("suspended", None, None),
                    _ => ("ok", None, None),
                };
                self.result(statement, part, outcome, tag_text, sqlstate, started);
            }
            b'Z' => {
                self.cycles_done += 1;
                let status = body.first().copied().unwrap_or(b'I');
                self.common
                    .position
                    .store(position(self.cycles_done, status), Ordering::Release);
                self.refill();
                while let Some(expect) = self.pending.pop_front() {
                    match expect {
                        Expect::CycleEnd => break,
                        Expect::Statement {
                            statement,
                            part,
                            started,
                        } => self.result(statement, part, "skipped", None, None, started),
                    }
                }
            }
            _ => {}
        }
    }

    fn result(
        &self,
        statement: u64,
        part: u32,
        outcome: &'static str,
        tag: Option<String>,
        sqlstate: Option<String>,
        started: Instant,
    ) {
        let rows = tag
            .as_deref()
            .and_then(|t| t.rsplit(' ').next())
            .and_then(|n| n.parse().ok());
        self.audit.record(Event::Result {
            session: self.session,
            statement,
            part,
            outcome,
            tag,
            rows,
            sqlstate,
            duration_us: started.elapsed().as_micros() as u64,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuditConfig, Durability};

    fn info() -> SessionInfo {
        SessionInfo {
            id: 1,
            subject: "agent".into(),
            groups: Vec::new(),
            database: "app".into(),
            token_id: "t".into(),
            client_addr: "127.0.0.1:1".into(),
            application_name: None,
        }
    }

    fn allowed() -> Decided {
        Decided {
            decision: Decision::Allow,
            ..Decided::default()
        }
    }

    /// Records `sql` as a Query and says whether it waited for the disk before returning
    /// (instead of leaving its answer to wait).
    async fn synced_before_forwarding(trail: &mut Trail, results: &mut Results, sql: &str) -> bool {
        let held = trail.common.hold.load(Ordering::Acquire);
        let statements = crate::analysis::analyze_uncached(sql).unwrap();
        trail
            .text("query", Some(sql), Some(&statements[..]), &[], allowed())
            .await
            .unwrap();
        let waits_for_answer = trail.common.hold.load(Ordering::Acquire) > held;
        // The cycle's answer.
        trail.expect_cycle_end();
        results.answerable().await.unwrap();
        !waits_for_answer
    }

    #[tokio::test]
    async fn with_fsync_only_statements_that_can_change_something_wait_before_forwarding() {
        let dir = tempfile::tempdir().unwrap();
        let config = AuditConfig {
            durability: Durability::Fsync,
            ..AuditConfig::default()
        };
        let audit =
            Arc::new(Audit::start(&config, dir.path().join("audit.jsonl"), None, None).unwrap());
        let (mut trail, results) = Trail::new(audit.clone(), info());
        let mut results = results.unwrap();
        let idle = |results: &mut Results| results.saw(b'Z', b"I");
        let in_block = |results: &mut Results| results.saw(b'Z', b"T");

        assert!(!synced_before_forwarding(&mut trail, &mut results, "SELECT 1").await);
        idle(&mut results);
        assert!(synced_before_forwarding(&mut trail, &mut results, "UPDATE t SET v = 1").await);
        idle(&mut results);
        assert!(!synced_before_forwarding(&mut trail, &mut results, "BEGIN").await);
        in_block(&mut results);
        assert!(!synced_before_forwarding(&mut trail, &mut results, "UPDATE t SET v = 1").await);
        in_block(&mut results);
        assert!(synced_before_forwarding(&mut trail, &mut results, "SELECT nextval('s')").await);
        in_block(&mut results);
        assert!(synced_before_forwarding(&mut trail, &mut results, "COMMIT").await);
        idle(&mut results);

        // Unanswered cycles: the transaction status is not known, so a write waits.
        assert!(!synced_before_forwarding(&mut trail, &mut results, "BEGIN").await);
        assert!(synced_before_forwarding(&mut trail, &mut results, "UPDATE t SET v = 1").await);
        in_block(&mut results);
        in_block(&mut results);

        // Extended protocol: a Parse runs nothing; its Bind is judged as the statement.
        let update = crate::analysis::analyze_uncached("UPDATE t SET v = $1").unwrap();
        let held = trail.common.hold.load(Ordering::Acquire);
        trail
            .text(
                "parse",
                Some("UPDATE t SET v = $1"),
                Some(&update[..]),
                &[],
                allowed(),
            )
            .await
            .unwrap();
        trail.prepared("u", 9, Some(&update[..]));
        assert!(
            trail.common.hold.load(Ordering::Acquire) > held,
            "a Parse does not wait"
        );
        let held = trail.common.hold.load(Ordering::Acquire);
        trail.bind("u", "", &[], allowed()).await.unwrap();
        assert!(
            trail.common.hold.load(Ordering::Acquire) > held,
            "inside the block"
        );
        // A second execution in the same cycle may follow a COMMIT: it waits.
        let held = trail.common.hold.load(Ordering::Acquire);
        trail.bind("u", "", &[], allowed()).await.unwrap();
        assert_eq!(trail.common.hold.load(Ordering::Acquire), held);
        trail.expect_cycle_end();
        results.answerable().await.unwrap();
        audit.close().await;
    }
}
