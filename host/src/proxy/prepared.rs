//! The session's named prepared statements, as the gateway saw them made, so that running one is
//! judged as what it runs. Postgres keeps SQL `PREPARE` and the protocol's named Parse in one
//! namespace: `EXECUTE s` runs a statement a driver parsed as `s`, and a Bind of `p` runs one
//! `PREPARE p` made. Judging `EXECUTE p` by its own text (a statement that "only executes")
//! would let a `DELETE` prepared under an approval policy run without one.
//!
//! A name may have several definitions: a re-`PREPARE` of a name Postgres still holds fails
//! there, and the gateway cannot tell from the request whether it will, so it keeps every
//! definition it forwarded until the name is deallocated (`DEALLOCATE`, `DISCARD ALL`, a
//! protocol Close) and an execution must pass as each of them. A deallocation the upstream
//! refuses leaves the gateway with no definition, so later executions are refused: every
//! mistake errs towards refusing.

use std::collections::HashMap;

use crate::analysis::{Analyzer, PreparedOp, Statement, Wrapper};

/// Definitions kept per name; past it the name is refused until deallocated (a client that
/// re-prepares a name over and over must not grow the gateway's memory).
const MAX_DEFINITIONS: usize = 16;

/// One way a name was defined.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Definition {
    /// The `PREPARE` statement's text, or the Parse message's statement text.
    text: String,
    /// Defined by SQL `PREPARE` rather than a protocol Parse.
    sql: bool,
}

#[derive(Debug, Default, Clone)]
pub struct NamedStatements {
    by_name: HashMap<String, Vec<Definition>>,
    /// Names defined by SQL `PREPARE` (a Bind of one of them is judged like an EXECUTE).
    sql_defined: usize,
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
}

impl NamedStatements {
    /// A protocol Parse named `name` with `text` went upstream.
    pub fn parsed(&mut self, name: &str, text: &str) {
        self.define(name, text, false);
    }

    /// A protocol Close of statement `name` went upstream.
    pub fn closed(&mut self, name: &str) {
        self.forget(name);
    }

    /// Whether some name was defined by SQL `PREPARE`.
    pub fn any_sql_defined(&self) -> bool {
        self.sql_defined > 0
    }

    /// Whether `name` has a definition made by SQL `PREPARE`.
    pub fn sql_defined(&self, name: &str) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|defs| defs.iter().any(|d| d.sql))
    }

    fn define(&mut self, name: &str, text: &str, sql: bool) {
        let definitions = self.by_name.entry(name.to_owned()).or_default();
        let definition = Definition {
            text: text.to_owned(),
            sql,
        };
        if definitions.contains(&definition) {
            return;
        }
        if sql && !definitions.iter().any(|d| d.sql) {
            self.sql_defined += 1;
        }
        // One past the bound marks the name as refused.
        if definitions.len() <= MAX_DEFINITIONS {
            definitions.push(definition);
        }
    }

    fn forget(&mut self, name: &str) {
        if let Some(definitions) = self.by_name.remove(name)
            && definitions.iter().any(|d| d.sql)
        {
            self.sql_defined -= 1;
        }
    }

    fn forget_all(&mut self) {
        self.by_name.clear();
        self.sql_defined = 0;
    }

    /// Applies what `statements` (forwarded upstream) did to the names: PREPAREs define,
    /// DEALLOCATE and DISCARD ALL forget.
    pub fn forwarded(&mut self, statements: &[Statement]) {
        for statement in statements {
            match &statement.prepared {
                Some(PreparedOp::Prepare(name)) => self.define(name, &statement.text, true),
                Some(PreparedOp::Deallocate(name)) => self.forget(name),
                Some(PreparedOp::DeallocateAll) => self.forget_all(),
                Some(PreparedOp::Execute(_)) | None => {}
            }
        }
    }

    /// `statements` with each execution of a named statement replaced by what it runs, once per
    /// definition the name may have (a statement that executes nothing is kept as it is). The
    /// statements before an execution in the same string count: `PREPARE p AS ...; EXECUTE p`
    /// runs the new definition.
    pub fn resolve(
        &self,
        analyzer: &Analyzer,
        statements: &[Statement],
    ) -> Result<Vec<Statement>, Unresolved> {
        let mut view: Option<NamedStatements> = None;
        let mut resolved = Vec::with_capacity(statements.len());
        for statement in statements {
            let current = view.as_ref().unwrap_or(self);
            if let Some(PreparedOp::Execute(name)) = &statement.prepared {
                let definitions = current
                    .by_name
                    .get(name)
                    .filter(|d| !d.is_empty())
                    .ok_or_else(|| Unresolved::Unknown(name.clone()))?;
                if definitions.len() > MAX_DEFINITIONS {
                    return Err(Unresolved::TooManyDefinitions(name.clone()));
                }
                for definition in definitions {
                    let runs = definition_statement(analyzer, name, definition)?;
                    resolved.push(executing(statement, name, &runs));
                }
            } else {
                resolved.push(statement.clone());
            }
            if matches!(
                statement.prepared,
                Some(
                    PreparedOp::Prepare(_) | PreparedOp::Deallocate(_) | PreparedOp::DeallocateAll
                )
            ) {
                view.get_or_insert_with(|| self.clone())
                    .forwarded(std::slice::from_ref(statement));
            }
        }
        Ok(resolved)
    }
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
            .find(|s| s.prepared == Some(PreparedOp::Prepare(name.to_owned())))
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
    if facts.command == "ExecuteStmt" {
        facts.kind = runs.kind;
        facts.command = runs.command.clone();
        facts.parameter = runs.parameter.clone();
        facts.has_where = runs.has_where;
        facts.lineage = runs.lineage.clone();
    }
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

    fn analyzed(sql: &str) -> Vec<Statement> {
        Analyzer::default().analyze(sql).unwrap().to_vec()
    }

    fn resolve(named: &NamedStatements, sql: &str) -> Result<Vec<Statement>, Unresolved> {
        named.resolve(&Analyzer::default(), &analyzed(sql))
    }

    #[test]
    fn an_execute_is_judged_as_the_statement_it_runs() {
        let mut named = NamedStatements::default();
        named.forwarded(&analyzed("PREPARE p AS DELETE FROM t"));
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
    }

    #[test]
    fn a_name_parsed_by_the_protocol_resolves_for_sql_execute() {
        let mut named = NamedStatements::default();
        named.parsed("s1", "UPDATE t SET a = $1");
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
        named.forwarded(&analyzed("PREPARE p(text) AS SELECT $1"));
        let runs = resolve(&named, "EXECUTE p(pg_read_file('/etc/passwd'))").unwrap();
        assert_eq!(runs[0].functions, ["pg_read_file"]);
    }

    #[test]
    fn every_definition_a_name_may_have_is_judged() {
        let mut named = NamedStatements::default();
        named.forwarded(&analyzed("PREPARE p AS SELECT 1"));
        // Fails upstream (the name exists), but the gateway cannot know that.
        named.forwarded(&analyzed("PREPARE p AS DELETE FROM t"));
        let kinds: Vec<_> = resolve(&named, "EXECUTE p")
            .unwrap()
            .iter()
            .map(|s| s.kind)
            .collect();
        assert_eq!(kinds, [StatementKind::Select, StatementKind::Delete]);
        named.forwarded(&analyzed("DEALLOCATE p"));
        assert_eq!(
            resolve(&named, "EXECUTE p"),
            Err(Unresolved::Unknown("p".into()))
        );
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
            named.forwarded(&analyzed(&format!("PREPARE p AS SELECT {i}")));
        }
        assert_eq!(
            resolve(&named, "EXECUTE p"),
            Err(Unresolved::TooManyDefinitions("p".into()))
        );
        named.closed("p");
        assert!(!named.any_sql_defined());
    }
}
