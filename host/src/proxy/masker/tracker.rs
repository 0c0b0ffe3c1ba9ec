//! The client direction's half of masking: what each client message's answer will carry (the
//! result of which statement, the description of which name), for the pipeline's requests, and
//! the rows masking cannot account for refused before they run.

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

    /// Starts tracking: the requests announced from now on carry what masking needs.
    pub fn start(&mut self) {
        self.on = true;
        self.common.tracking.store(true, Ordering::Release);
    }

    /// What `statement`'s result rows carry: for FETCH and EXECUTE, the DECLARE's or
    /// PREPARE's statement; `None` when the name was declared as two different statements
    /// (its computed columns are then withheld).
    pub fn lineage_source(&self, statement: &Statement) -> Result<Option<Statement>, Unplannable> {
        if let Some(name) = statement.fetched_cursor() {
            return self
                .cursors
                .get(pg_name(name))
                .cloned()
                .ok_or_else(|| Unplannable::Unknown("cursor", name.to_owned()));
        }
        if let Some(name) = statement.executed_name() {
            return self
                .sql_prepared
                .get(pg_name(name))
                .cloned()
                .ok_or_else(|| Unplannable::Unknown("prepared statement", name.to_owned()));
        }
        Ok(Some(statement.clone()))
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

    /// A Query goes upstream with these statements: where each one's result columns come
    /// from (`None` while not tracking).
    pub fn query(&mut self, statements: &[Statement]) -> Option<Vec<Source>> {
        if !self.on {
            return None;
        }
        let sources = statements
            .iter()
            .map(|statement| {
                self.remember(statement);
                self.common.sent(&statement.text);
                Source(self.lineage_source(statement).ok().flatten())
            })
            .collect();
        Some(sources)
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

    /// A Describe of `target` goes upstream: what the described result comes from (`None`
    /// while not tracking).
    pub fn describe(&mut self, target: &Target) -> Option<Source> {
        if !self.on {
            return None;
        }
        let statement = match target {
            Target::Statement(name) => self.statements.get_mut(name).and_then(|p| {
                p.described = true;
                p.statement.clone()
            }),
            Target::Portal(name) => {
                let statement = self.portal_statement(name);
                if let Some(portal) = self.portals.get_mut(name) {
                    portal.described = true;
                }
                statement
            }
        };
        Some(Source(statement))
    }

    fn portal_statement(&self, portal: &str) -> Option<Statement> {
        let bound = &self.portals.get(portal)?.bound;
        self.statements.get(bound)?.statement.clone()
    }

    /// An Execute of `portal` goes upstream: whose plan its rows take, and, when nothing
    /// describes its rows yet, the source of a Describe of the portal the gateway sends first
    /// (`None` while not tracking).
    pub fn execute(&mut self, portal: &str) -> Option<Execution> {
        if !self.on {
            return None;
        }
        // A portal not bound through this session (a SQL cursor, a name bound before tracking
        // began) is described for itself: never planned as some statement it was not bound
        // from.
        let Some(bound) = self.portals.get(portal) else {
            return Some(Execution {
                describe_first: Some(Source(None)),
                plan: PlanOf::Portal,
            });
        };
        let statement_described = self
            .statements
            .get(&bound.bound)
            .is_some_and(|s| s.described);
        let plan = if bound.described {
            PlanOf::Portal
        } else if statement_described {
            PlanOf::Statement(bound.bound.clone())
        } else {
            let source = Source(self.portal_statement(portal));
            if let Some(p) = self.portals.get_mut(portal) {
                p.described = true;
            }
            return Some(Execution {
                describe_first: Some(source),
                plan: PlanOf::Portal,
            });
        };
        Some(Execution {
            describe_first: None,
            plan,
        })
    }

    /// A Close of `target` goes upstream.
    pub fn close(&mut self, target: &Target) {
        if !self.on {
            return;
        }
        match target {
            Target::Statement(name) => {
                self.statements.remove(name);
            }
            Target::Portal(name) => {
                self.portals.remove(name);
            }
        }
    }
}

/// What masking needs of an Execute.
pub struct Execution {
    /// The source of a Describe of the portal to send before it (its rows are described by
    /// nothing yet).
    pub describe_first: Option<Source>,
    pub plan: PlanOf,
}
