//! What the analysis reports about one statement: its kind, what it wraps, its tables and
//! functions, its writes and settings ([`Facts`], shared by statements of the same shape), and
//! its own text ([`Statement`]).

use std::sync::Arc;

use super::effect::Effect;
use super::kind::StatementKind;
use super::lineage::Lineage;
use super::settings::SettingChange;

/// A table, schema-qualified when the statement qualified it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableRef {
    pub schema: Option<String>,
    pub name: String,
}

impl TableRef {
    /// Whether this is the `pg_settings` view: writing it runs `set_config` (its rule), a
    /// change of settings the statement's text does not name.
    pub fn is_settings_view(&self) -> bool {
        self.name.eq_ignore_ascii_case("pg_settings")
            && self
                .schema
                .as_deref()
                .is_none_or(|schema| schema.eq_ignore_ascii_case("pg_catalog"))
    }
}

impl std::fmt::Display for TableRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A statement the client sent that runs another one. The analysis describes the statement that
/// runs (its kind, command, tables, functions, writes), and records the wrapper here: a guard
/// that reads `kind` must not be walked around by `EXPLAIN ANALYZE CREATE TABLE ... AS` or
/// `PREPARE p AS DELETE ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrapper {
    /// `EXPLAIN ANALYZE` (in any spelling of the option) runs its statement.
    ExplainAnalyze,
    /// `PREPARE name AS` runs nothing yet; every `EXECUTE name` runs the statement. It is judged
    /// as that statement when prepared, so that a refusal comes at once.
    Prepare,
    /// `DECLARE ... CURSOR FOR` runs its query as rows are fetched.
    DeclareCursor,
    /// `EXECUTE name` (also under `EXPLAIN ANALYZE` or `CREATE TABLE ... AS`) runs a prepared
    /// statement; the session resolves the name (the analysis of a text alone cannot).
    Execute,
}

impl Wrapper {
    /// The wrapper's name in the audit log.
    pub fn label(self) -> &'static str {
        match self {
            Wrapper::ExplainAnalyze => "explain-analyze",
            Wrapper::Prepare => "prepare",
            Wrapper::DeclareCursor => "declare-cursor",
            Wrapper::Execute => "execute",
        }
    }
}

/// What a statement does to the session's named prepared statements (SQL PREPARE and the
/// protocol's Parse share one namespace in Postgres).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreparedOp {
    /// `PREPARE name AS ...`
    Prepare(String),
    /// Runs the prepared statement `name`: `EXECUTE name`, `EXPLAIN ANALYZE EXECUTE name`,
    /// `CREATE TABLE ... AS EXECUTE name`.
    Execute(String),
    /// `DEALLOCATE name`
    Deallocate(String),
    /// `DEALLOCATE ALL`, `DISCARD ALL`
    DeallocateAll,
}

/// One statement's analysis: its own text, and what the parser found in it, shared by every
/// statement of the same shape (so a new constant costs one string, not a copy of the facts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub text: String,
    pub facts: Arc<Facts>,
}

impl std::ops::Deref for Statement {
    type Target = Facts;

    fn deref(&self) -> &Facts {
        &self.facts
    }
}

/// What the parser found in a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// pg_query's fingerprint (printed as 16 hex digits).
    pub fingerprint: u64,
    pub kind: StatementKind,
    /// The parser's node name of the statement that runs (`SelectStmt`, `TruncateStmt`...).
    pub command: String,
    /// When the client's statement wraps the one that runs (see [`Wrapper`]).
    pub wrapper: Option<Wrapper>,
    /// SET/RESET/SHOW parameter, lower case; for any other statement that changes settings
    /// (`set_config`, a function's or role's `SET` clause, `ALTER SYSTEM`), the one it
    /// changes, or `*` when it changes several or one it does not name.
    pub parameter: Option<String>,
    /// Every setting the statement changes, wherever in it (see `settings.rs`).
    pub settings: Vec<SettingChange>,
    /// What the statement does to the session's named prepared statements.
    pub prepared: Option<PreparedOp>,
    /// The cursor a DECLARE creates or a FETCH, MOVE or CLOSE uses.
    pub cursor: Option<String>,
    pub tables_read: Vec<TableRef>,
    pub tables_written: Vec<TableRef>,
    pub functions: Vec<String>,
    pub has_where: bool,
    /// An UPDATE/DELETE without WHERE runs somewhere in the statement.
    pub unfiltered_write: bool,
    pub writes: bool,
    pub copy_program: bool,
    /// When running it can change something that outlives it (the audit log's durability).
    pub effect: Effect,
    /// Which column references feed the statement's output and written values (masking).
    pub lineage: Lineage,
    /// Set by [`Analyzer`] for single DML statements: equal for statements of the same shape
    /// (same tokens apart from constants), never reused for another shape.
    pub shape: Option<u64>,
    /// Set by the gateway from the database's catalog, never by the parser: the statement
    /// calls a user-defined function declared VOLATILE, which may write whatever the
    /// statement looks like (`writes` is then set too). Such a verdict is never reused: the
    /// catalog may change under the same text.
    pub calls_volatile_user_function: bool,
    /// Set by the gateway from the database's catalog: the user-defined functions among
    /// `functions` (every other one is a built-in). Plugins read it through the contract's
    /// `catalog` interface.
    pub user_functions: Vec<FunctionFacts>,
}

impl Facts {
    /// The cursor a FETCH (or MOVE) reads, when the statement is one.
    pub fn fetched_cursor(&self) -> Option<&str> {
        (self.command == "FetchStmt")
            .then_some(self.cursor.as_deref())
            .flatten()
    }

    /// Whether the statement that runs is an EXECUTE of a prepared statement (bare, or under
    /// EXPLAIN ANALYZE), as opposed to one that wraps an EXECUTE (`CREATE TABLE ... AS
    /// EXECUTE`).
    pub fn is_execute(&self) -> bool {
        self.command == "ExecuteStmt"
    }

    /// The prepared statement a bare EXECUTE runs.
    pub fn executed_name(&self) -> Option<&str> {
        match &self.prepared {
            Some(PreparedOp::Execute(name)) if self.is_execute() => Some(name),
            _ => None,
        }
    }
}

/// What the database's catalog declares about a user-defined function a statement calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionFacts {
    /// As listed in [`Facts::functions`].
    pub name: String,
    /// Declared VOLATILE.
    pub volatile: bool,
}
