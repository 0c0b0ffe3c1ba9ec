//! The session's named prepared statements, as the gateway saw them made, so that running one is
//! judged as what it runs. Postgres keeps SQL `PREPARE` and the protocol's named Parse in one
//! namespace: `EXECUTE s` runs a statement a driver parsed as `s`, and a Bind of `p` runs one
//! `PREPARE p` made. Judging `EXECUTE p` by its own text (a statement that "only executes")
//! would let a `DELETE` prepared under an approval policy run without one.
//!
//! The registry must never know less than Postgres does:
//! - Names are Postgres' names: at most 63 bytes (NAMEDATALEN - 1, cut at a character
//!   boundary), as Postgres cuts both SQL identifiers and protocol names, so a Bind of a longer
//!   spelling finds what Postgres finds.
//! - A name may have several definitions: a re-`PREPARE` of a name Postgres still holds fails
//!   there, and the gateway cannot tell from the request whether it will, so every definition
//!   it forwarded is kept, and an execution must pass as each of them.
//! - A definition is forgotten only once Postgres has done it: a `DEALLOCATE`, `DISCARD ALL` or
//!   protocol Close is applied when its request cycle has been answered without an error (an
//!   error may have skipped it, a transaction may have refused it). A `DEALLOCATE` inside a
//!   Parse runs only if executed: it is never applied.
//! - A definition that itself executes a name (`EXECUTE y` parsed as `s`) is resolved again at
//!   each execution, against the definitions of the moment.

use std::collections::HashMap;

use super::name_context::Change;
use crate::analysis::{Analyzer, PreparedOp, Statement, Wrapper};
use crate::wire::frontend::pg_name;

/// Definitions kept per name; past it the name is refused until deallocated (a client that
/// re-prepares a name over and over must not grow the gateway's memory).
const MAX_DEFINITIONS: usize = 16;

/// How deep `EXECUTE` of a name defined as `EXECUTE` of another is followed.
const MAX_DEPTH: usize = 4;

/// How the policies judged a protocol Parse's text when it was prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judged {
    /// The plugin set's generation that judged it: a Bind under another set is judged again.
    pub generation: u64,
    /// A policy asked for approval: every execution is held (and judged) on its own.
    pub held: bool,
}

/// One way a name was defined.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Definition {
    /// The `PREPARE` statement's text, or the Parse message's statement text.
    text: String,
    /// Defined by SQL `PREPARE` rather than a protocol Parse.
    sql: bool,
    /// The text itself executes a name (`EXECUTE y` parsed as `s`): what it runs is only known
    /// at each Bind.
    executes: bool,
    /// The text is a COPY FROM STDIN (a protocol Parse only: SQL PREPARE cannot prepare one).
    copy_in: bool,
    /// How a protocol Parse was judged (`None` for SQL `PREPARE`, judged at every execution).
    judged: Option<Judged>,
    /// What running a protocol Parse's text does to the settings names depend on (SQL
    /// `PREPARE`: judged, and so known, at every execution).
    names: Change,
    /// When, in the order of everything forwarded: a deallocation forgets only what came
    /// before it (`DEALLOCATE p; PREPARE p AS ...` keeps the new one).
    seq: u64,
}

/// A deallocation waiting for its request cycle's answer: of one name, or of all, and of what
/// was defined before `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Forget {
    name: Option<String>,
    seq: u64,
}

#[derive(Debug, Default, Clone)]
pub struct NamedStatements {
    by_name: HashMap<String, Vec<Definition>>,
    /// Deallocations by the request cycle that carries them.
    pending: Vec<(u64, Forget)>,
    /// The next definition's or deallocation's place in the order of things forwarded.
    next_seq: u64,
}

/// Why an execution cannot be judged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    #[error("prepared statement \"{0}\" was not prepared through this session")]
    Unknown(String),
    #[error(
        "prepared statement \"{0}\" was prepared more than {MAX_DEFINITIONS} times without DEALLOCATE"
    )]
    TooManyDefinitions(String),
    #[error("the definition of prepared statement \"{0}\" cannot be analysed: {1}")]
    Unanalysable(String, String),
    #[error("prepared statement \"{0}\" executes others more than {MAX_DEPTH} deep")]
    TooDeep(String),
}

impl NamedStatements {
    /// A protocol Parse named `name` with `text`, judged as `judged`, making `names` when run,
    /// went upstream.
    pub fn parsed(&mut self, name: &str, text: &str, judged: Judged, names: Change) {
        self.define(name, text, Some(judged), names);
    }

    /// What running a protocol Bind of `name` may do to the settings names depend on: the
    /// changes of every definition the name may have.
    pub fn changes(&self, name: &str) -> Change {
        self.by_name
            .get(pg_name(name))
            .map_or_else(Change::default, |defs| {
                defs.iter()
                    .fold(Change::default(), |all, d| all.union(&d.names))
            })
    }

    /// A protocol Close of statement `name` went upstream in request cycle `cycle`.
    pub fn closed(&mut self, name: &str, cycle: u64) {
        self.forget_after(cycle, Some(pg_name(name).to_owned()));
    }

    fn forget_after(&mut self, cycle: u64, name: Option<String>) {
        let seq = self.sequence();
        self.pending.push((cycle, Forget { name, seq }));
    }

    fn sequence(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Whether a Bind of `name` under plugin set `generation` runs something that must be
    /// judged then: a statement SQL PREPARE made, one that executes another name, one held for
    /// approval at each execution, or one the current plugins never judged.
    pub fn judged_at_bind(&self, name: &str, generation: u64) -> bool {
        self.by_name
            .get(pg_name(name))
            .is_some_and(|defs| defs.iter().any(|d| d.judged_at_bind(generation)))
    }

    /// Whether a Bind of `name` may run a COPY FROM STDIN.
    pub fn may_copy_in(&self, name: &str) -> bool {
        self.by_name
            .get(pg_name(name))
            .is_some_and(|defs| defs.iter().any(|d| d.copy_in))
    }

    /// Whether Postgres may know `name` (the unnamed statement always counts).
    pub fn knows(&self, name: &str) -> bool {
        name.is_empty() || self.by_name.contains_key(pg_name(name))
    }

    /// Whether deallocations wait for their answers.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn define(&mut self, name: &str, text: &str, judged: Option<Judged>, names: Change) {
        let seq = self.sequence();
        let sql = judged.is_none();
        let definitions = self.by_name.entry(pg_name(name).to_owned()).or_default();
        if let Some(same) = definitions
            .iter_mut()
            .find(|d| d.text == text && d.sql == sql)
        {
            same.seq = seq;
            // The same text judged again: held if either judgement held it (Postgres may keep
            // the first preparation), judged again at a Bind if either set is gone.
            same.judged = match (same.judged, judged) {
                (Some(old), Some(new)) => Some(Judged {
                    generation: if old.generation == new.generation {
                        new.generation
                    } else {
                        u64::MAX
                    },
                    held: old.held || new.held,
                }),
                (_, new) => new,
            };
            same.names = same.names.union(&names);
            return;
        }
        // One past the bound marks the name as refused.
        if definitions.len() <= MAX_DEFINITIONS {
            definitions.push(Definition {
                text: text.to_owned(),
                sql,
                executes: !sql && definition_executes(text),
                copy_in: !sql && definition_copies_in(text),
                judged,
                names,
                seq,
            });
        }
    }

    /// Forgets the definitions of `name` made before `seq`.
    fn forget(&mut self, name: &str, seq: u64) {
        if let Some(definitions) = self.by_name.get_mut(name) {
            definitions.retain(|d| d.seq > seq);
            if definitions.is_empty() {
                self.by_name.remove(name);
            }
        }
    }

    /// Applies what `statements`, forwarded upstream in request cycle `cycle`, do to the names:
    /// PREPAREs define at once (keeping more definitions only errs towards refusing);
    /// DEALLOCATE and DISCARD ALL wait for the cycle's answer, and only when they run as sent
    /// (`runs`: a Query), not when a Parse merely prepares them.
    pub fn forwarded(&mut self, statements: &[Statement], cycle: u64, runs: bool) {
        for statement in statements {
            match &statement.prepared {
                Some(PreparedOp::Prepare(name)) => {
                    self.define(name, &statement.text, None, Change::default())
                }
                Some(PreparedOp::Deallocate(name)) if runs => {
                    self.forget_after(cycle, Some(pg_name(name).to_owned()))
                }
                Some(PreparedOp::DeallocateAll) if runs => self.forget_after(cycle, None),
                _ => {}
            }
        }
    }

    /// Applies the deallocations of every request cycle answered so far (`answered` of them)
    /// that Postgres answered without an error (`failed` tells which did not).
    /// Returns the names that no longer have a definition.
    pub fn settle(&mut self, answered: u64, failed: impl Fn(u64) -> bool) -> Vec<String> {
        let mut forgotten = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        for (cycle, forget) in pending {
            if cycle >= answered {
                self.pending.push((cycle, forget));
                continue;
            }
            if failed(cycle) {
                continue;
            }
            let names = match forget.name {
                Some(name) => vec![name],
                None => self.by_name.keys().cloned().collect(),
            };
            for name in names {
                self.forget(&name, forget.seq);
                if !self.by_name.contains_key(&name) {
                    forgotten.push(name);
                }
            }
        }
        forgotten
    }

    /// `statements` with each execution of a named statement replaced by what it runs, once per
    /// definition the name may have (a statement that executes nothing is kept as it is). The
    /// statements before an execution in the same string count: `PREPARE p AS ...; EXECUTE p`
    /// runs the new definition (and a string stops at its first error, so a DEALLOCATE before
    /// the execution has run if the execution runs).
    pub fn resolve(
        &self,
        analyzer: &Analyzer,
        statements: &[Statement],
    ) -> Result<Vec<Statement>, Unresolved> {
        let mut view: Option<NamedStatements> = None;
        let mut resolved = Vec::with_capacity(statements.len());
        for statement in statements {
            let current = view.as_ref().unwrap_or(self);
            resolved.extend(current.runs(analyzer, statement, 0)?);
            match &statement.prepared {
                Some(PreparedOp::Prepare(name)) => {
                    view.get_or_insert_with(|| self.clone()).define(
                        name,
                        &statement.text,
                        None,
                        Change::default(),
                    );
                }
                Some(PreparedOp::Deallocate(name)) => {
                    let view = view.get_or_insert_with(|| self.clone());
                    let seq = view.sequence();
                    view.forget(pg_name(name), seq);
                }
                Some(PreparedOp::DeallocateAll) => {
                    view.get_or_insert_with(|| self.clone()).by_name.clear();
                }
                _ => {}
            }
        }
        Ok(resolved)
    }

    /// What `statement` runs: itself, or for an execution of a name, each definition of the
    /// name (followed through definitions that execute others).
    fn runs(
        &self,
        analyzer: &Analyzer,
        statement: &Statement,
        depth: usize,
    ) -> Result<Vec<Statement>, Unresolved> {
        let Some(PreparedOp::Execute(name)) = &statement.prepared else {
            return Ok(vec![statement.clone()]);
        };
        if depth >= MAX_DEPTH {
            return Err(Unresolved::TooDeep(name.clone()));
        }
        let name = pg_name(name);
        let definitions = self
            .by_name
            .get(name)
            .filter(|d| !d.is_empty())
            .ok_or_else(|| Unresolved::Unknown(name.to_owned()))?;
        if definitions.len() > MAX_DEFINITIONS {
            return Err(Unresolved::TooManyDefinitions(name.to_owned()));
        }
        let mut runs = Vec::new();
        for definition in definitions {
            let defined = definition_statement(analyzer, name, definition)?;
            // A definition that is itself an execution: what it runs now.
            let inner = if definition.sql {
                vec![defined]
            } else {
                self.runs(analyzer, &defined, depth + 1)?
            };
            runs.extend(inner.iter().map(|inner| executing(statement, name, inner)));
        }
        Ok(runs)
    }
}

impl Definition {
    fn judged_at_bind(&self, generation: u64) -> bool {
        match self.judged {
            None => true,
            Some(judged) => self.executes || judged.held || judged.generation != generation,
        }
    }
}

/// Whether a Parse text is a COPY FROM STDIN.
fn definition_copies_in(text: &str) -> bool {
    crate::analysis::analyze_uncached(text).is_ok_and(|statements| {
        statements
            .iter()
            .any(|s| s.kind == crate::analysis::StatementKind::CopyIn)
    })
}

/// Whether a Parse text executes a named statement (cheaply: its analysis is cached anyway).
fn definition_executes(text: &str) -> bool {
    crate::analysis::analyze_uncached(text).is_ok_and(|statements| {
        statements
            .iter()
            .any(|s| matches!(s.prepared, Some(PreparedOp::Execute(_))))
    })
}

/// The statement a definition prepares.
fn definition_statement(
    analyzer: &Analyzer,
    name: &str,
    definition: &Definition,
) -> Result<Statement, Unresolved> {
    let analysed = analyzer
        .analyze(&definition.text)
        .map_err(|e| Unresolved::Unanalysable(name.to_owned(), e.to_string()))?;
    let found = if definition.sql {
        analysed
            .iter()
            .find(|s| matches!(&s.prepared, Some(PreparedOp::Prepare(n)) if pg_name(n) == name))
    } else {
        analysed.first()
    };
    found
        .cloned()
        .ok_or_else(|| Unresolved::Unanalysable(name.to_owned(), "no statement".into()))
}

/// `execute` (a statement running prepared statement `name`) as the statement it runs: the
/// prepared statement's kind, command and facts when it is a bare (or EXPLAIN ANALYZE'd)
/// EXECUTE, its own kind with the prepared statement's tables, functions and writes added when
/// it wraps one (`CREATE TABLE ... AS EXECUTE`). The text names the definition, so that a
/// verdict remembered for the text is never reused for another definition of the name.
fn executing(execute: &Statement, name: &str, runs: &Statement) -> Statement {
    let mut facts = (*execute.facts).clone();
    if facts.is_execute() {
        facts.kind = runs.kind;
        facts.command = runs.command.clone();
        facts.parameter = runs.parameter.clone();
        facts.has_where = runs.has_where;
        facts.lineage = runs.lineage.clone();
    } else {
        // `CREATE TABLE ... AS EXECUTE`: every value the prepared statement reads is written
        // into the new table.
        union(&mut facts.lineage.written, &runs.lineage.all);
        union(&mut facts.lineage.written, &runs.lineage.written);
    }
    union(&mut facts.settings, &runs.settings);
    facts.wrapper = Some(Wrapper::Execute);
    facts.fingerprint = runs.fingerprint;
    facts.shape = None;
    union(&mut facts.tables_read, &runs.tables_read);
    union(&mut facts.tables_written, &runs.tables_written);
    union(&mut facts.functions, &runs.functions);
    facts.writes |= runs.writes;
    facts.unfiltered_write |= runs.unfiltered_write;
    facts.copy_program |= runs.copy_program;
    facts.effect = facts.effect.max(runs.effect);
    Statement {
        text: format!("{}\n-- {name} was prepared as: {}", execute.text, runs.text),
        facts: std::sync::Arc::new(facts),
    }
}

fn union<T: PartialEq + Clone>(into: &mut Vec<T>, from: &[T]) {
    for item in from {
        if !into.contains(item) {
            into.push(item.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::StatementKind;

    /// Judged by plugin set 1 and allowed.
    const PASSED: Judged = Judged {
        generation: 1,
        held: false,
    };

    fn analyzed(sql: &str) -> Vec<Statement> {
        Analyzer::default().analyze(sql).unwrap().to_vec()
    }

    fn resolve(named: &NamedStatements, sql: &str) -> Result<Vec<Statement>, Unresolved> {
        named.resolve(&Analyzer::default(), &analyzed(sql))
    }

    fn prepare(named: &mut NamedStatements, sql: &str) {
        named.forwarded(&analyzed(sql), 0, true);
    }

    #[test]
    fn an_execute_is_judged_as_the_statement_it_runs() {
        let mut named = NamedStatements::default();
        prepare(&mut named, "PREPARE p AS DELETE FROM t");
        let runs = resolve(&named, "EXECUTE p").unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].kind, StatementKind::Delete);
        assert_eq!(runs[0].wrapper, Some(Wrapper::Execute));
        assert!(runs[0].writes && runs[0].unfiltered_write);
        assert_eq!(runs[0].tables_written[0].name, "t");
        let explained = resolve(&named, "EXPLAIN ANALYZE EXECUTE p").unwrap();
        assert_eq!(explained[0].kind, StatementKind::Delete);
        let copied = resolve(&named, "CREATE TABLE c AS EXECUTE p").unwrap();
        assert_eq!(copied[0].kind, StatementKind::Ddl);
        assert!(copied[0].unfiltered_write);
        prepare(&mut named, "PREPARE e AS SELECT email FROM customers");
        let copied = resolve(&named, "CREATE TABLE c AS EXECUTE e").unwrap();
        assert!(
            copied[0]
                .lineage
                .written
                .contains(&crate::analysis::Ref::Column("email".into())),
            "the copy writes what the prepared statement reads"
        );
    }

    #[test]
    fn a_name_parsed_by_the_protocol_resolves_for_sql_execute() {
        let mut named = NamedStatements::default();
        named.parsed("s1", "UPDATE t SET a = $1", PASSED, Change::default());
        let runs = resolve(&named, "EXECUTE s1(5)").unwrap();
        assert_eq!(runs[0].kind, StatementKind::Update);
        assert!(runs[0].unfiltered_write);
        assert!(
            runs[0].text.contains("UPDATE t SET a = $1"),
            "{}",
            runs[0].text
        );
    }

    #[test]
    fn functions_in_execute_arguments_are_kept() {
        let mut named = NamedStatements::default();
        prepare(&mut named, "PREPARE p(text) AS SELECT $1");
        let runs = resolve(&named, "EXECUTE p(pg_read_file('/etc/passwd'))").unwrap();
        assert_eq!(runs[0].functions, ["pg_read_file"]);
    }

    #[test]
    fn every_definition_a_name_may_have_is_judged() {
        let mut named = NamedStatements::default();
        prepare(&mut named, "PREPARE p AS SELECT 1");
        // Fails upstream (the name exists), but the gateway cannot know that.
        prepare(&mut named, "PREPARE p AS DELETE FROM t");
        let kinds: Vec<_> = resolve(&named, "EXECUTE p")
            .unwrap()
            .iter()
            .map(|s| s.kind)
            .collect();
        assert_eq!(kinds, [StatementKind::Select, StatementKind::Delete]);
        named.forwarded(&analyzed("DEALLOCATE p"), 5, true);
        assert!(
            resolve(&named, "EXECUTE p").is_ok(),
            "not before it was answered"
        );
        named.settle(6, |_| false);
        assert_eq!(
            resolve(&named, "EXECUTE p"),
            Err(Unresolved::Unknown("p".into()))
        );
    }

    #[test]
    fn a_deallocation_counts_only_once_answered_without_an_error() {
        let mut named = NamedStatements::default();
        prepare(&mut named, "PREPARE x AS DELETE FROM t");
        // `SELECT 1/0; DEALLOCATE x` in cycle 3: the error skips the DEALLOCATE.
        named.forwarded(&analyzed("SELECT 1/0; DEALLOCATE x"), 3, true);
        assert!(named.settle(3, |_| false).is_empty(), "unanswered");
        assert!(named.settle(4, |cycle| cycle == 3).is_empty());
        assert_eq!(
            resolve(&named, "EXECUTE x").unwrap()[0].kind,
            StatementKind::Delete
        );
        // A Parse of DEALLOCATE runs nothing until executed: never applied.
        named.forwarded(&analyzed("DEALLOCATE x"), 4, false);
        named.closed("x", 5);
        assert_eq!(named.settle(6, |_| false), ["x"]);
        assert!(!named.knows("x"));
        // What is defined after a DISCARD ALL survives it.
        named.forwarded(&analyzed("DISCARD ALL"), 7, true);
        named.parsed("after", "SELECT 1", PASSED, Change::default());
        assert!(named.settle(8, |_| false).is_empty());
        assert!(named.knows("after"));
    }

    #[test]
    fn names_are_postgres_names_cut_to_63_bytes() {
        let mut named = NamedStatements::default();
        let long = "a".repeat(63) + "1";
        named.parsed(&long, "DELETE FROM t", PASSED, Change::default());
        assert!(
            named.knows(&("a".repeat(63) + "2")),
            "the same name to Postgres"
        );
        assert_eq!(
            pg_name(&"é".repeat(40)).len(),
            62,
            "cut at a character boundary"
        );
    }

    #[test]
    fn a_definition_that_executes_another_name_is_resolved_at_each_execution() {
        let mut named = NamedStatements::default();
        prepare(&mut named, "PREPARE y AS SELECT 1");
        named.parsed("runs_y", "EXECUTE y", PASSED, Change::default());
        assert!(named.judged_at_bind("runs_y", 1));
        named.forwarded(&analyzed("DEALLOCATE y"), 0, true);
        named.settle(1, |_| false);
        prepare(&mut named, "PREPARE y AS DELETE FROM t");
        let runs = resolve(&named, "EXECUTE runs_y").unwrap();
        assert_eq!(runs[0].kind, StatementKind::Delete);
        named.parsed("loop_a", "EXECUTE loop_b", PASSED, Change::default());
        named.parsed("loop_b", "EXECUTE loop_a", PASSED, Change::default());
        assert!(matches!(
            resolve(&named, "EXECUTE loop_a"),
            Err(Unresolved::TooDeep(_))
        ));
    }

    #[test]
    fn statements_earlier_in_the_same_string_count() {
        let named = NamedStatements::default();
        let runs = resolve(&named, "PREPARE q AS DELETE FROM t; EXECUTE q").unwrap();
        assert_eq!(runs[1].kind, StatementKind::Delete);
        assert_eq!(
            resolve(
                &named,
                "PREPARE q AS SELECT 1; DEALLOCATE q; PREPARE q AS DELETE FROM t; EXECUTE q"
            )
            .unwrap()[3]
                .kind,
            StatementKind::Delete
        );
        assert!(resolve(&named, "DISCARD ALL; EXECUTE q").is_err());
    }

    #[test]
    fn an_unknown_name_and_a_name_redefined_too_often_are_refused() {
        let mut named = NamedStatements::default();
        assert_eq!(
            resolve(&named, "EXECUTE nobody"),
            Err(Unresolved::Unknown("nobody".into()))
        );
        for i in 0..=MAX_DEFINITIONS {
            prepare(&mut named, &format!("PREPARE p AS SELECT {i}"));
        }
        assert_eq!(
            resolve(&named, "EXECUTE p"),
            Err(Unresolved::TooManyDefinitions("p".into()))
        );
        assert!(named.judged_at_bind("p", 1));
        named.closed("p", 0);
        named.settle(1, |_| false);
        assert!(!named.judged_at_bind("p", 1) && !named.knows("p"));
    }

    #[test]
    fn a_parse_is_judged_again_at_bind_when_held_or_judged_by_another_plugin_set() {
        let mut named = NamedStatements::default();
        named.parsed("plain", "SELECT 1", PASSED, Change::default());
        assert!(
            !named.judged_at_bind("plain", 1),
            "judged by the current set"
        );
        assert!(
            named.judged_at_bind("plain", 2),
            "the plugins changed since"
        );
        let held = Judged {
            generation: 1,
            held: true,
        };
        named.parsed("write", "DELETE FROM t", held, Change::default());
        assert!(named.judged_at_bind("write", 1), "every execution is held");
        // The same text parsed again and allowed (Postgres may keep the held one).
        named.parsed("write", "DELETE FROM t", PASSED, Change::default());
        assert!(named.judged_at_bind("write", 1));
        // Another text under a name whose held definition was deallocated in the meantime.
        named.closed("write", 0);
        named.parsed("write", "SELECT 2", PASSED, Change::default());
        assert!(
            named.judged_at_bind("write", 1),
            "until the Close is answered"
        );
        named.settle(1, |_| false);
        assert!(
            !named.judged_at_bind("write", 1),
            "only the new definition is left"
        );
    }
}
