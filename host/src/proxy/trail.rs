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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::analysis::Statement;
pub use crate::audit::Decided;
use crate::audit::{Audit, AuditError, Event, StatementRecord};
use crate::config::StatementText;
use crate::policy::SessionInfo;

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

/// The client direction's half.
pub struct Trail {
    audit: Arc<Audit>,
    info: SessionInfo,
    expect: mpsc::UnboundedSender<Expect>,
    next: u64,
    /// Prepared statement name → its Parse's record number.
    prepared: HashMap<String, u64>,
    /// Portal name → its Bind's record number.
    portals: HashMap<String, u64>,
}

impl Trail {
    /// The trail and the receiver the upstream direction reads expectations from (`None`
    /// when auditing is off: nothing is tracked).
    pub fn new(audit: Arc<Audit>, info: SessionInfo) -> (Trail, Option<Results>) {
        let (expect, expected) = mpsc::unbounded_channel();
        let results = audit.enabled().then(|| Results {
            audit: audit.clone(),
            session: info.id,
            expected,
            pending: VecDeque::new(),
        });
        let trail = Trail {
            audit,
            info,
            expect,
            next: 0,
            prepared: HashMap::new(),
            portals: HashMap::new(),
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
        self.write(record, allowed).await?;
        Ok(statement)
    }

    /// A Parse that went upstream under `name`.
    pub fn prepared(&mut self, name: &str, statement: u64) {
        self.prepared.insert(name.to_owned(), statement);
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
        let record = StatementRecord {
            prepared: self.prepared.get(name).copied(),
            params: (!normalized).then(|| params.to_vec()),
            ..self.record(statement, "bind", decided)
        };
        let written = self.write(record, allowed).await;
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

    async fn write(&self, record: StatementRecord, durable: bool) -> Result<(), AuditError> {
        let event = Event::Statement(Box::new(record));
        if durable {
            self.audit.durable(event).await
        } else {
            self.audit.record(event);
            Ok(())
        }
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
    pub fn expect_cycle_end(&self) {
        let _ = self.expect.send(Expect::CycleEnd);
    }
}

/// The upstream direction's half: pairs answers with announced statements.
pub struct Results {
    audit: Arc<Audit>,
    session: u64,
    expected: mpsc::UnboundedReceiver<Expect>,
    pending: VecDeque<Expect>,
}

impl Results {
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
                    b'C' => ("ok", super::gate::cstr(body).0.map(str::to_owned), None),
                    b'E' => ("error", None, super::messages::error_field(body, b'C')),
                    b's' => ("suspended", None, None),
                    _ => ("ok", None, None),
                };
                self.result(statement, part, outcome, tag_text, sqlstate, started);
            }
            b'Z' => {
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
