//! The client direction's half of masking: what each client message will make the upstream
//! answer (a result of which statement, a description of which name), announced to the
//! upstream half in order, and the rows masking cannot account for refused before they run.

use super::*;

pub(super) struct Prepared {
    statement: Option<Statement>,
    described: bool,
}

pub(super) struct Portal {
    bound: String,
    described: bool,
}

/// The client direction's half.
pub struct Tracker {
    pub(super) common: Arc<Common>,
    pub(super) expect: mpsc::UnboundedSender<Expect>,
    pub(super) on: bool,
    pub(super) statements: HashMap<String, Prepared>,
    pub(super) portals: HashMap<String, Portal>,
    /// DECLAREd cursors and SQL PREPAREd statements: what their FETCH and EXECUTE return;
    /// `None` once a name was declared (or prepared) as two different statements, since a
    /// re-declaration Postgres refuses leaves the first one in place.
    pub(super) cursors: HashMap<String, Option<Statement>>,
    pub(super) sql_prepared: HashMap<String, Option<Statement>>,
}

/// Why a statement's result could not be planned before it runs.
pub enum Unplannable {
    /// A FETCH from a cursor or an EXECUTE of a statement the gateway never saw declared.
    Unknown(&'static str, String),
}

impl Tracker {
    pub fn on(&self) -> bool {
        self.on
    }

    /// Starts tracking with request cycle `cycle` (the next one the client sends).
    pub fn start(&mut self, cycle: u64) {
        if !self.on {
            self.on = true;
            self.common.from_cycle.store(cycle, Ordering::Release);
        }
    }

    fn send(&self, expect: Expect) {
        let _ = self.expect.send(expect);
    }

    /// What `statement`'s result rows carry: for FETCH and EXECUTE, the DECLARE's or
    /// PREPARE's statement; `None` when the name was declared as two different statements
    /// (its computed columns are then withheld).
    pub fn lineage_source(&self, statement: &Statement) -> Result<Option<Statement>, Unplannable> {
        let known = match (statement.command.as_str(), &statement.prepared) {
            ("FetchStmt", _) => statement.cursor.as_ref().map(|name| {
                self.cursors
                    .get(pg_name(name))
                    .cloned()
                    .ok_or(Unplannable::Unknown("cursor", name.clone()))
            }),
            ("ExecuteStmt", Some(PreparedOp::Execute(name))) => Some(
                self.sql_prepared
                    .get(pg_name(name))
                    .cloned()
                    .ok_or(Unplannable::Unknown("prepared statement", name.clone())),
            ),
            _ => None,
        };
        known.unwrap_or_else(|| Ok(Some(statement.clone())))
    }

    /// Remembers what a statement that went upstream declares or prepares, and marks DDL.
    fn remember(&mut self, statement: &Statement) {
        let declared = |map: &mut HashMap<String, Option<Statement>>, name: &str| {
            map.entry(pg_name(name).to_owned())
                .and_modify(|known| {
                    if known.as_ref().is_some_and(|k| k.facts != statement.facts) {
                        *known = None;
                    }
                })
                .or_insert_with(|| Some(statement.clone()));
        };
        match (&statement.wrapper, &statement.prepared) {
            (Some(Wrapper::DeclareCursor), _) => {
                if let Some(name) = &statement.cursor {
                    declared(&mut self.cursors, name);
                }
            }
            (_, Some(PreparedOp::Prepare(name))) => declared(&mut self.sql_prepared, name),
            _ => {}
        }
        if statement.kind == StatementKind::Ddl {
            self.common.ddl.store(true, Ordering::Release);
        }
    }

    /// A Query went upstream with these statements.
    pub fn query(&mut self, statements: &[Statement]) {
        if !self.on {
            return;
        }
        for statement in statements {
            self.remember(statement);
            self.common.sent(&statement.text);
            let source = self.lineage_source(statement).ok().flatten();
            self.send(Expect::Part(source));
        }
    }

    /// A Parse of `name` went upstream.
    pub fn parsed(&mut self, name: &str, statement: Option<&Statement>) {
        if !self.on {
            return;
        }
        if let Some(statement) = statement {
            self.remember(statement);
            self.common.sent(&statement.text);
        }
        let statement = statement.and_then(|s| self.lineage_source(s).ok().flatten());
        self.statements.insert(
            pg_name(name).to_owned(),
            Prepared {
                statement,
                described: false,
            },
        );
    }

    pub fn bound(&mut self, portal: &str, statement: &str) {
        if self.on {
            let portal = pg_name(portal);
            // Portals and SQL cursors share one namespace: a FETCH of this name now reads the
            // protocol portal, which no DECLARE describes.
            self.cursors.remove(portal);
            self.portals.insert(
                portal.to_owned(),
                Portal {
                    bound: pg_name(statement).to_owned(),
                    described: false,
                },
            );
        }
    }

    /// A Describe went upstream (`body`: `S` or `P` and the name).
    pub fn describe(&mut self, body: &[u8]) {
        if !self.on {
            return;
        }
        let Some((&kind, rest)) = body.split_first() else {
            return;
        };
        let name = pg_name(crate::wire::frontend::cstr(rest).0.unwrap_or("")).to_owned();
        match kind {
            b'S' => {
                let statement = self.statements.get_mut(&name).and_then(|p| {
                    p.described = true;
                    p.statement.clone()
                });
                self.send(Expect::DescribeStatement { name, statement });
            }
            b'P' => {
                let statement = self.portal_statement(&name);
                if let Some(portal) = self.portals.get_mut(&name) {
                    portal.described = true;
                }
                self.send(Expect::DescribePortal {
                    portal: name,
                    statement,
                    injected: false,
                });
            }
            _ => {}
        }
    }

    fn portal_statement(&self, portal: &str) -> Option<Statement> {
        let bound = &self.portals.get(portal)?.bound;
        self.statements.get(bound)?.statement.clone()
    }

    /// An Execute of `portal` is about to go upstream: queues a Describe of it first when
    /// nothing describes its rows yet.
    pub fn execute<W: AsyncWrite + Unpin>(&mut self, portal: &str, out: &mut FrameWriter<W>) {
        if !self.on {
            return;
        }
        let portal = pg_name(portal);
        // A portal not bound through this session (a SQL cursor, a name bound before tracking
        // began) is described for itself: never planned as some statement it was not bound
        // from.
        let (bound, portal_described, statement_described) = match self.portals.get(portal) {
            Some(p) => (
                p.bound.clone(),
                p.described,
                self.statements.get(&p.bound).is_some_and(|s| s.described),
            ),
            None => (UNKNOWN_STATEMENT.to_owned(), false, false),
        };
        let mut portal_described = portal_described;
        if !portal_described && !statement_described {
            let mut describe = BytesMut::new();
            postgres_protocol::message::frontend::describe(b'P', portal, &mut describe)
                .expect("portal names from the client are NUL-free");
            out.queue(&describe);
            self.send(Expect::DescribePortal {
                portal: portal.to_owned(),
                statement: self.portal_statement(portal),
                injected: true,
            });
            if let Some(p) = self.portals.get_mut(portal) {
                p.described = true;
            }
            portal_described = true;
        }
        self.send(Expect::Execute {
            portal: portal.to_owned(),
            bound,
            portal_described,
        });
    }

    /// A Close went upstream (`body`: `S` or `P` and the name).
    pub fn close(&mut self, body: &[u8]) {
        if !self.on {
            return;
        }
        let Some((&kind, rest)) = body.split_first() else {
            return;
        };
        let name = pg_name(crate::wire::frontend::cstr(rest).0.unwrap_or("")).to_owned();
        if kind == b'S' {
            self.statements.remove(&name);
        } else {
            self.portals.remove(&name);
        }
        self.send(Expect::Close { kind, name });
    }

    /// A Query, Sync or FunctionCall went upstream.
    pub fn cycle_end(&self) {
        if self.on {
            self.send(Expect::CycleEnd);
        }
    }
}
