//! A session's audit trail: the record of each statement text decided (Query, Parse) and of
//! each execution of a prepared statement (Bind), written before the message goes upstream,
//! and the result of each statement that went, read from the session's request/answer matching
//! (`pipeline.rs`): CommandComplete, EmptyQueryResponse and PortalSuspended complete a
//! statement, an ErrorResponse fails the execution the cycle owes first, and the statements
//! Postgres then skips (the rest of a query string, or of a pipeline up to Sync) are recorded
//! as skipped.
//!
//! With fsync durability, a statement that can change something by running now (see
//! [`Effect`]) is forwarded once its record is on disk; any other is forwarded once its record
//! is written, and its rows relayed at once, the record reaching the disk within the audit's
//! `sync_delay`. Whether the session is in a transaction block comes from the last
//! ReadyForQuery, trusted only for the first statement of a request cycle that starts with
//! every earlier cycle answered.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::pipeline::{Answer, Record, Request};
use super::session::progress::Progress;
use crate::analysis::{Effect, Statement};
use crate::audit::{Audit, AuditError, Event, Outcome, Protocol, StatementRecord};
pub use crate::audit::{Decided, Decision};
use crate::config::StatementText;
use crate::identity::SessionInfo;

/// The client direction's half.
pub struct Trail {
    audit: Arc<Audit>,
    info: SessionInfo,
    /// Where the session's requests stand: whether the last ReadyForQuery answered every
    /// request cycle sent, and in which transaction status.
    progress: Arc<Progress>,
    next: u64,
    /// Prepared statement name → its Parse's record number and its statements' effect.
    prepared: HashMap<String, (u64, Effect)>,
    /// Portal name → its Bind's record number.
    portals: HashMap<String, u64>,
    /// No statement was recorded yet in the cycle the client is sending now.
    cycle_fresh: bool,
}

impl Trail {
    /// The trail and its upstream direction's half (`None` when auditing is off: nothing is
    /// recorded).
    pub fn new(
        audit: Arc<Audit>,
        info: SessionInfo,
        progress: Arc<Progress>,
    ) -> (Trail, Option<Results>) {
        let results = audit.enabled().then(|| Results {
            audit: audit.clone(),
            session: info.id,
        });
        let trail = Trail {
            audit,
            info,
            progress,
            next: 0,
            prepared: HashMap::new(),
            portals: HashMap::new(),
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
        protocol: Protocol,
        text: Option<&str>,
        statements: Option<&[Statement]>,
        params: &[Option<String>],
        decided: Decided,
    ) -> Result<u64, AuditError> {
        self.next += 1;
        let statement = self.next;
        let normalized = self.audit.statement_text == StatementText::Normalized;
        // Preparing runs nothing; a Query runs every statement in it.
        let at_once = protocol != Protocol::Parse && effect_of(statements).at_once(self.in_block());
        let statements = statements.unwrap_or_default();
        if statements
            .iter()
            .any(|s| s.kind == crate::analysis::StatementKind::Prepared)
        {
            self.sql_touched_names();
        }
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

    /// A Parse of `statements` (`None`: not analysed) went upstream under `name`. The unnamed
    /// statement is replaced by every Parse Postgres runs; a name already taken keeps its old
    /// statement if Postgres refuses the new one (a duplicate), so an execution of it counts
    /// as the stronger of the two.
    pub fn prepared(&mut self, name: &str, record: u64, statements: Option<&[Statement]>) {
        let mut effect = effect_of(statements);
        if !name.is_empty()
            && let Some(&(_, earlier)) = self.prepared.get(name)
        {
            effect = effect.max(earlier);
        }
        self.prepared.insert(name.to_owned(), (record, effect));
    }

    /// SQL PREPARE, EXECUTE or DEALLOCATE ran: names may now hold statements no Parse showed
    /// (the protocol and SQL share them), so every execution by name counts as one that can
    /// change something.
    fn sql_touched_names(&mut self) {
        for (_, effect) in self.prepared.values_mut() {
            *effect = Effect::AtOnce;
        }
    }

    /// Whether the session is inside a transaction block as the statement being recorded now
    /// runs: known only when every earlier request cycle has been answered and nothing else
    /// ran in this one yet (a COMMIT earlier in a pipeline ends the block it started in).
    fn in_block(&self) -> bool {
        let sent = self.progress.sent.load(Ordering::Acquire);
        // The status is written before the count of cycles answered.
        self.cycle_fresh
            && self.progress.done.load(Ordering::Acquire) == sent
            && matches!(self.progress.status.load(Ordering::Acquire), b'T' | b'E')
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
            ..self.record(statement, Protocol::Bind, decided)
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
    fn record(&self, statement: u64, protocol: Protocol, decided: Decided) -> StatementRecord {
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
            via: self.info.via,
        }
    }

    /// Writes a statement's record: for one allowed to run, durable before it is forwarded
    /// when running it can change something (`at_once`), else written before it is forwarded
    /// and on disk within the log's `sync_delay` (fsync durability).
    async fn write(
        &mut self,
        record: StatementRecord,
        allowed: bool,
        at_once: bool,
    ) -> Result<(), AuditError> {
        // A Query or a Bind runs as it goes upstream; a Parse only prepares.
        if record.protocol != Protocol::Parse {
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
        self.audit.before_forward(event).await
    }

    /// The audit record of the execution an Execute of `portal` runs (its Bind's).
    pub fn execution(&self, portal: &str) -> Option<Record> {
        self.portals
            .get(portal)
            .map(|&statement| Record::now(statement))
    }

    /// A Query, Sync or FunctionCall went upstream: the next message starts a new cycle.
    pub fn cycle_closed(&mut self) {
        self.cycle_fresh = true;
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

/// The upstream direction's half: records the results the pipeline matched to statements.
pub struct Results {
    audit: Arc<Audit>,
    session: u64,
}

impl Results {
    /// Records what the upstream message `tag` (with `body`), matched as `answer`, says of the
    /// statements the session runs.
    pub fn answered(&self, tag: u8, body: &[u8], answer: &Answer<'_>) {
        match answer {
            Answer::Complete(owner) => {
                let Some(record) = owner.request.record() else {
                    return;
                };
                let (outcome, tag) = match tag {
                    b'C' => (
                        Outcome::Ok,
                        crate::wire::frontend::cstr(body).0.map(str::to_owned),
                    ),
                    b's' => (Outcome::Suspended, None),
                    _ => (Outcome::Ok, None),
                };
                self.result(record, owner.part, outcome, tag, None);
            }
            Answer::Failed { owner, skipped } => {
                // The error is the outcome of the execution the cycle owed first: the failed
                // statement itself, or the one a failed Parse or Bind was to run. A refused
                // message's failure is the gateway's own, recorded as its decision.
                let mut error = crate::wire::backend::error_field(body, b'C');
                let refused = owner.is_some_and(|o| matches!(o.request, Request::Refused(_)));
                if refused {
                    error = None;
                }
                if let Some(owner) = owner
                    && let Some(record) = owner.request.record()
                {
                    self.result(record, owner.part, Outcome::Error, None, error.take());
                    self.skipped_after(owner.request, record, owner.part + 1);
                }
                for request in *skipped {
                    let Some(record) = request.record() else {
                        continue;
                    };
                    match error.take() {
                        Some(sqlstate) if !refused => {
                            self.result(record, 0, Outcome::Error, None, Some(sqlstate));
                            self.skipped_after(request, record, 1);
                        }
                        _ => self.skipped_after(request, record, 0),
                    }
                }
            }
            Answer::Ready { skipped, .. } => {
                for request in *skipped {
                    if let Some(record) = request.record() {
                        self.skipped_after(request, record, 0);
                    }
                }
            }
            Answer::Aside | Answer::Within(_) | Answer::Unmatched(_) => {}
        }
    }

    /// Records `request`'s statements from `part` on as skipped.
    fn skipped_after(&self, request: &Request, record: Record, part: u32) {
        let parts = match request {
            Request::Query(query) => query.parts.unwrap_or(1),
            _ => 1,
        };
        for part in part..parts {
            self.result(record, part, Outcome::Skipped, None, None);
        }
    }

    fn result(
        &self,
        record: Record,
        part: u32,
        outcome: Outcome,
        tag: Option<String>,
        sqlstate: Option<String>,
    ) {
        let rows = tag
            .as_deref()
            .and_then(|t| t.rsplit(' ').next())
            .and_then(|n| n.parse().ok());
        self.audit.record(Event::Result {
            session: self.session,
            statement: record.statement,
            part,
            outcome,
            tag,
            rows,
            sqlstate,
            duration_us: record.started.elapsed().as_micros() as u64,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuditConfig, Durability};
    use crate::proxy::fuzzing::session_info;

    fn allowed() -> Decided {
        Decided {
            decision: Decision::Allow,
            ..Decided::default()
        }
    }

    /// The client direction closed a request cycle.
    fn cycle_sent(trail: &mut Trail) {
        trail.progress.sent.fetch_add(1, Ordering::AcqRel);
        trail.cycle_closed();
    }

    /// The upstream direction relayed a ReadyForQuery with `status`.
    fn answered(progress: &Progress, status: u8) {
        progress.status.store(status, Ordering::Release);
        progress.done.fetch_add(1, Ordering::AcqRel);
    }

    /// A trail over a fresh log with fsync durability and `sync_delay` (the directory lives as
    /// long as the first value).
    fn fsync_trail(
        sync_delay: std::time::Duration,
    ) -> (tempfile::TempDir, Arc<Audit>, Arc<Progress>, Trail) {
        let dir = tempfile::tempdir().unwrap();
        let config = AuditConfig {
            durability: Durability::Fsync,
            sync_delay,
            ..AuditConfig::default()
        };
        let audit =
            Arc::new(Audit::start(&config, dir.path().join("audit.jsonl"), None, None).unwrap());
        let progress = Arc::new(Progress::default());
        let (trail, _results) = Trail::new(audit.clone(), session_info("agent"), progress.clone());
        (dir, audit, progress, trail)
    }

    /// Records `sql` as a Query and says whether its record (and all before it) was on disk
    /// when it returned: whether it waited for the disk before forwarding.
    async fn synced_before_forwarding(trail: &mut Trail, audit: &Audit, sql: &str) -> bool {
        recorded(trail, Protocol::Query, sql).await;
        cycle_sent(trail);
        audit.all_on_disk()
    }

    /// Records a Parse of `sql` under `name`, as the gate does; returns its record number.
    async fn parsed(trail: &mut Trail, name: &str, sql: &str) -> u64 {
        let (id, statements) = recorded(trail, Protocol::Parse, sql).await;
        trail.prepared(name, id, Some(&statements[..]));
        id
    }

    /// Records `sql`, analysed and allowed, as sent by `protocol`: its record number and
    /// analysis.
    async fn recorded(trail: &mut Trail, protocol: Protocol, sql: &str) -> (u64, Arc<[Statement]>) {
        let statements = crate::analysis::analyze_uncached(sql).unwrap();
        let id = trail
            .text(protocol, Some(sql), Some(&statements[..]), &[], allowed())
            .await
            .unwrap();
        (id, statements)
    }

    #[tokio::test]
    async fn with_fsync_only_statements_that_can_change_something_wait_before_forwarding() {
        // Long enough that nothing but a waiting record syncs during the test.
        let (_dir, audit, progress, mut trail) = fsync_trail(std::time::Duration::from_secs(3600));
        let idle = || answered(&progress, b'I');
        let in_block = || answered(&progress, b'T');
        let waits =
            async |trail: &mut Trail, sql: &str| synced_before_forwarding(trail, &audit, sql).await;

        assert!(!waits(&mut trail, "SELECT 1").await);
        idle();
        assert!(waits(&mut trail, "UPDATE t SET v = 1").await);
        idle();
        assert!(!waits(&mut trail, "BEGIN").await);
        in_block();
        assert!(!waits(&mut trail, "UPDATE t SET v = 1").await);
        in_block();
        assert!(waits(&mut trail, "SELECT nextval('s')").await);
        in_block();
        assert!(waits(&mut trail, "COMMIT").await);
        idle();

        // Unanswered cycles: the transaction status is not known, so a write waits.
        assert!(!waits(&mut trail, "BEGIN").await);
        assert!(waits(&mut trail, "UPDATE t SET v = 1").await);
        in_block();
        in_block();

        // Extended protocol: a Parse runs nothing; its Bind is judged as the statement.
        parsed(&mut trail, "u", "UPDATE t SET v = $1").await;
        assert!(!audit.all_on_disk(), "a Parse does not wait");
        trail.bind("u", "", &[], allowed()).await.unwrap();
        assert!(!audit.all_on_disk(), "inside the block");
        // A second execution in the same cycle may follow a COMMIT: it waits.
        trail.bind("u", "", &[], allowed()).await.unwrap();
        assert!(audit.all_on_disk());
        cycle_sent(&mut trail);
        audit.close().await;
    }

    #[tokio::test]
    async fn an_execution_by_name_counts_as_the_strongest_statement_the_name_may_hold() {
        let (_dir, audit, progress, mut trail) = fsync_trail(std::time::Duration::from_secs(3600));
        let parse = async |trail: &mut Trail, name: &str, sql: &str| {
            parsed(trail, name, sql).await;
            cycle_sent(trail);
            answered(&progress, b'I');
        };
        // Postgres refuses a second Parse of a taken name: "s" may still be the DELETE.
        parse(&mut trail, "s", "DELETE FROM t").await;
        parse(&mut trail, "s", "SELECT 1").await;
        trail.bind("s", "", &[], allowed()).await.unwrap();
        assert!(
            audit.all_on_disk(),
            "the DELETE it may be waits for the disk"
        );
        cycle_sent(&mut trail);
        answered(&progress, b'I');

        // The unnamed statement is replaced by every Parse.
        parse(&mut trail, "", "DELETE FROM t").await;
        parse(&mut trail, "", "SELECT 1").await;
        trail.bind("", "", &[], allowed()).await.unwrap();
        assert!(!audit.all_on_disk(), "a read does not wait");
        cycle_sent(&mut trail);
        answered(&progress, b'I');

        // SQL PREPARE and DEALLOCATE share the names: after them, no name is known.
        parse(&mut trail, "r", "SELECT 2").await;
        synced_before_forwarding(&mut trail, &audit, "DEALLOCATE r").await;
        answered(&progress, b'I');
        trail.bind("r", "", &[], allowed()).await.unwrap();
        assert!(
            audit.all_on_disk(),
            "what PREPARE may have put under the name waits"
        );
        cycle_sent(&mut trail);
        audit.close().await;
    }

    #[tokio::test]
    async fn with_fsync_records_nobody_waits_for_reach_the_disk_within_the_sync_delay() {
        let (_dir, audit, _progress, mut trail) = fsync_trail(std::time::Duration::from_millis(20));
        synced_before_forwarding(&mut trail, &audit, "SELECT 1").await;
        // Nothing waits for it, and it still gets there (the wait is a backstop, not the
        // bound: the syncer flushes after `sync_delay`).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !audit.all_on_disk() {
            assert!(std::time::Instant::now() < deadline, "never synced");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        audit.close().await;
    }
}
