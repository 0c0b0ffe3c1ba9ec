//! Which column references feed a statement's output values and the values it writes, for
//! masking. Only value positions count: select lists, VALUES lists, UPDATE's SET, RETURNING
//! (at any depth, so a subquery's select list counts too). WHERE, JOIN, GROUP BY and ORDER BY
//! only filter and order rows; a reference there never puts a value in a result.
//!
//! References are kept by their column name, without resolving them to tables: the parse tree
//! alone cannot say which table an unqualified name belongs to, so masking resolves each name
//! against the catalog columns of every table the statement touches (erring towards more).

use serde_json::Value;

/// One column reference in a value position.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ref {
    /// `email`, `c.email`, `s.t.email`: the last name part, as the parser folded it.
    Column(String),
    /// `c`, `c.*`, `ROW(c.*)`, a `*` inside an expression: every column of a row.
    WholeRow,
}

/// What a statement's values read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Lineage {
    /// Per output column, the references its expression reads, when the outputs map one to one
    /// onto the top-level select (or RETURNING) list: no `*` in it, no set operation, no
    /// subquery or CTE the outputs could come through. `None` otherwise.
    pub per_output: Option<Vec<Vec<Ref>>>,
    /// Every reference in any value position of the statement, at any depth.
    pub all: Vec<Ref>,
    /// References in values the statement writes into tables (`INSERT ... SELECT`, `UPDATE
    /// ... SET`, `CREATE TABLE ... AS`, `SELECT ... INTO`, `CREATE VIEW`, MERGE), at any depth.
    pub written: Vec<Ref>,
    /// References in conditions and orderings, at any depth: WHERE, JOIN ... ON, GROUP BY,
    /// HAVING, ORDER BY, DISTINCT ON, window clauses, CASE conditions, aggregate FILTER, MERGE
    /// join and action conditions. They put no value in a result, but answer questions about
    /// the values (strict masking refuses them).
    pub filters: Vec<Ref>,
}

impl Lineage {
    /// What output column `index` (of `count`) reads: its own references where the outputs map
    /// onto the select list, everything the statement's values read otherwise.
    pub fn output(&self, index: usize, count: usize) -> &[Ref] {
        match &self.per_output {
            Some(per) if per.len() == count => per.get(index).map_or(&[], Vec::as_slice),
            _ => &self.all,
        }
    }
}

/// The lineage of one statement (`tree` is `{"node": {"<NodeType>": {...}}}`).
pub fn lineage(tree: &Value) -> Lineage {
    let mut collector = Collector::default();
    collector.visit(tree, false, false);
    let mut filters = Vec::new();
    conditions(tree, &mut filters);
    let mut lineage = Lineage {
        per_output: top_outputs(tree),
        all: collector.all,
        written: collector.written,
        filters,
    };
    for list in [&mut lineage.all, &mut lineage.written, &mut lineage.filters] {
        list.sort();
        list.dedup();
    }
    lineage
}

/// Fields holding a condition or an ordering.
const CONDITION_FIELDS: &[&str] = &[
    "where_clause",
    "having_clause",
    "group_clause",
    "sort_clause",
    "distinct_clause",
    "quals",
    "window_clause",
    "partition_clause",
    "order_clause",
    "join_condition",
    "agg_filter",
    "condition",
];

/// Adds every reference inside a condition or an ordering of `value` to `out`.
fn conditions(value: &Value, out: &mut Vec<Ref>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| conditions(v, out)),
        Value::Object(map) => {
            for (key, inner) in map {
                let condition = CONDITION_FIELDS.contains(&key.as_str())
                    // CASE WHEN <expr> THEN, and CASE <arg> WHEN: both compare.
                    || (key == "expr" && map.contains_key("result"))
                    || (key == "arg" && map.contains_key("args") && map.contains_key("defresult"));
                if condition {
                    let mut collector = Collector::default();
                    collector.refs(inner, false);
                    out.extend(collector.all);
                }
                match key.as_str() {
                    // JOIN ... USING (email) and NATURAL JOIN compare columns by name.
                    "JoinExpr" => {
                        for name in list(inner, "using_clause") {
                            if let Some(name) =
                                name.pointer("/node/String/sval").and_then(Value::as_str)
                            {
                                out.push(Ref::Column(name.to_owned()));
                            }
                        }
                        if inner.get("is_natural").and_then(Value::as_bool) == Some(true) {
                            out.push(Ref::WholeRow);
                        }
                    }
                    // DISTINCT, INTERSECT, EXCEPT and UNION (without ALL) compare whole output
                    // rows: every value in them answers whether two are equal.
                    "SelectStmt" => {
                        // SetOperation: 2 UNION, 3 INTERSECT, 4 EXCEPT.
                        let op = inner.get("op").and_then(Value::as_i64).unwrap_or(0);
                        let all = inner.get("all").and_then(Value::as_bool) == Some(true);
                        let compares = matches!(op, 3 | 4) || (op == 2 && !all);
                        if compares {
                            let mut collector = Collector::default();
                            for side in ["larg", "rarg"] {
                                if let Some(side) = inner.get(side) {
                                    collector.refs(side, false);
                                }
                            }
                            out.extend(collector.all);
                        }
                        if !list(inner, "distinct_clause").is_empty() {
                            let mut collector = Collector::default();
                            collector
                                .refs(&Value::Array(list(inner, "target_list").to_vec()), false);
                            out.extend(collector.all);
                        }
                    }
                    _ => {}
                }
                conditions(inner, out);
            }
        }
        _ => {}
    }
}

/// The node inside a `{"node": {"Type": {...}}}` wrapper, with its type name.
fn node(value: &Value) -> Option<(&str, &Value)> {
    let inner = value.get("node").unwrap_or(value);
    inner
        .as_object()
        .and_then(|m| m.iter().next())
        .map(|(k, v)| (k.as_str(), v))
}

fn list<'a>(value: &'a Value, field: &str) -> &'a [Value] {
    value
        .get(field)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn present(value: &Value, field: &str) -> bool {
    value.get(field).is_some_and(|v| match v {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    })
}

/// A DML statement's RETURNING list (Postgres 18 wraps it in a ReturningClause).
fn returning(stmt: &Value) -> &[Value] {
    match stmt.get("returning_clause") {
        Some(clause) if !clause.is_null() => list(clause, "exprs"),
        _ => list(stmt, "returning_list"),
    }
}

/// The per-output references of the statement's own result, where they map one to one.
fn top_outputs(tree: &Value) -> Option<Vec<Vec<Ref>>> {
    let (kind, stmt) = node(tree)?;
    let targets = match kind {
        "SelectStmt" => {
            let plain = !present(stmt, "larg")
                && !present(stmt, "with_clause")
                && !present(stmt, "values_lists")
                && !list(stmt, "from_clause").iter().any(has_subquery);
            if !plain {
                return None;
            }
            list(stmt, "target_list")
        }
        "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
            if present(stmt, "with_clause") {
                return None;
            }
            returning(stmt)
        }
        "DeclareCursorStmt" | "PrepareStmt" | "ExplainStmt" => {
            return stmt.get("query").and_then(top_outputs);
        }
        "CopyStmt" => return stmt.get("query").and_then(top_outputs),
        _ => return None,
    };
    let mut outputs = Vec::with_capacity(targets.len());
    for target in targets {
        let value = target
            .pointer("/node/ResTarget/val")
            .unwrap_or(&Value::Null);
        if is_star(value) {
            return None;
        }
        let mut collector = Collector::default();
        collector.refs(value, false);
        let mut refs = collector.all;
        refs.sort();
        refs.dedup();
        outputs.push(refs);
    }
    Some(outputs)
}

/// A FROM item whose columns are not a table's: a subquery or a function (its columns could
/// carry anything the function read).
fn has_subquery(item: &Value) -> bool {
    match node(item) {
        Some(("RangeSubselect" | "RangeFunction" | "RangeTableFunc", _)) => true,
        Some(("JoinExpr", join)) => {
            join.get("larg").is_some_and(has_subquery) || join.get("rarg").is_some_and(has_subquery)
        }
        _ => false,
    }
}

/// Built-ins that keep what their arguments read somewhere a later statement (or another
/// session) reads it without the masking of its column: a notification, a setting, a large
/// object, a sequence, the WAL.
const STASHING: &[&str] = &[
    "pg_notify",
    "set_config",
    "lo_put",
    "lo_from_bytea",
    "lowrite",
    "setval",
    "pg_logical_emit_message",
];

/// Whether `call` is one of [`STASHING`]: what its arguments read counts as written.
fn stashes_values(call: &Value) -> bool {
    let name = super::names::qualified_name(call.get("funcname")).to_ascii_lowercase();
    STASHING.contains(&name.trim_start_matches("pg_catalog."))
}

/// A bare `*` or `t.*` select-list entry.
fn is_star(value: &Value) -> bool {
    match node(value) {
        Some(("ColumnRef", column)) => list(column, "fields")
            .iter()
            .any(|f| matches!(node(f), Some(("AStar", _)))),
        _ => false,
    }
}

#[derive(Default)]
struct Collector {
    all: Vec<Ref>,
    written: Vec<Ref>,
}

/// Nodes whose value lists are written into a table.
const WRITING: &[&str] = &[
    "InsertStmt",
    "UpdateStmt",
    "MergeStmt",
    "CreateTableAsStmt",
    "ViewStmt",
];

impl Collector {
    /// Walks `value`; `writing`: inside a statement whose values go into a table; `in_value`:
    /// inside a value position (references count).
    fn visit(&mut self, value: &Value, writing: bool, in_value: bool) {
        match value {
            Value::Array(items) => items.iter().for_each(|v| self.visit(v, writing, in_value)),
            Value::Object(map) => {
                for (key, inner) in map {
                    match key.as_str() {
                        "ColumnRef" if in_value => self.column_ref(inner, writing),
                        // Values handed to these leave the statement's result: stashed in a
                        // setting or sent as a notification, from whatever position.
                        "FuncCall" if stashes_values(inner) => {
                            if let Some(args) = inner.get("args") {
                                self.refs(args, true);
                            }
                            self.visit(inner, writing, in_value)
                        }
                        "target_list" | "values_lists" | "merge_when_clauses" => {
                            self.visit(inner, writing, true)
                        }
                        // RETURNING feeds the result, not the table.
                        "returning_list" | "returning_clause" => self.visit(inner, false, true),
                        k if WRITING.contains(&k) => self.visit(inner, true, in_value),
                        "SelectStmt" if present(inner, "into_clause") => {
                            self.visit(inner, true, in_value)
                        }
                        // A subquery's own WHERE is not a value position even inside one.
                        "where_clause" | "having_clause" | "group_clause" | "sort_clause"
                        | "from_clause" | "quals" | "window_clause"
                            if !in_value =>
                        {
                            self.visit(inner, writing, false)
                        }
                        _ => self.visit(inner, writing, in_value),
                    }
                }
            }
            _ => {}
        }
    }

    /// Collects every reference in an expression (all positions inside it count).
    fn refs(&mut self, value: &Value, writing: bool) {
        match value {
            Value::Array(items) => items.iter().for_each(|v| self.refs(v, writing)),
            Value::Object(map) => {
                for (key, inner) in map {
                    if key == "ColumnRef" {
                        self.column_ref(inner, writing);
                    } else {
                        self.refs(inner, writing);
                    }
                }
            }
            _ => {}
        }
    }

    fn column_ref(&mut self, column: &Value, writing: bool) {
        let fields = list(column, "fields");
        let last = fields.last().and_then(node);
        let reference = match last {
            Some(("AStar", _)) | None => Ref::WholeRow,
            Some(("String", s)) => match s.get("sval").and_then(Value::as_str) {
                Some(name) => Ref::Column(name.to_owned()),
                None => Ref::WholeRow,
            },
            Some(_) => Ref::WholeRow,
        };
        if writing {
            self.written.push(reference.clone());
        }
        self.all.push(reference);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(sql: &str) -> Lineage {
        let parsed = pg_query::parse(sql, 0).unwrap();
        let tree = serde_json::to_value(&parsed.protobuf.stmts[0].stmt).unwrap();
        lineage(&tree)
    }

    fn col(name: &str) -> Ref {
        Ref::Column(name.into())
    }

    #[test]
    fn plain_select_maps_each_output_to_its_own_references() {
        let l = of("SELECT id, upper(email), name || '' AS n, 1 FROM customers WHERE phone = 'x'");
        assert_eq!(
            l.per_output,
            Some(vec![
                vec![col("id")],
                vec![col("email")],
                vec![col("name")],
                vec![]
            ])
        );
        assert!(
            !l.all.contains(&col("phone")),
            "WHERE is not a value: {:?}",
            l.all
        );
        assert!(l.written.is_empty());
    }

    #[test]
    fn whole_row_references_and_stars_in_expressions_are_whole_rows() {
        let l = of("SELECT row_to_json(c), json_agg(c.*), to_jsonb(c) FROM customers c");
        let per = l.per_output.unwrap();
        assert_eq!(per[0], vec![col("c")]);
        assert_eq!(per[1], vec![Ref::WholeRow]);
        assert!(of("SELECT * FROM customers").per_output.is_none());
        assert!(of("SELECT c.* FROM customers c").per_output.is_none());
    }

    #[test]
    fn subqueries_ctes_and_set_operations_fall_back_to_everything_read() {
        let l = of("SELECT x FROM (SELECT upper(email) AS x FROM customers) s");
        assert!(l.per_output.is_none());
        assert!(l.all.contains(&col("email")));
        let l = of("WITH e AS (SELECT email FROM customers) SELECT * FROM e");
        assert!(l.per_output.is_none() && l.all.contains(&col("email")));
        let l = of("SELECT name FROM items UNION SELECT email FROM customers");
        assert!(l.per_output.is_none() && l.all.contains(&col("email")));
        // A scalar subquery in the select list stays with its output.
        let l = of("SELECT id, (SELECT email FROM customers LIMIT 1) FROM items");
        assert_eq!(l.per_output.unwrap()[1], vec![col("email")]);
    }

    #[test]
    fn writes_record_the_references_they_copy_into_tables() {
        assert!(
            of("INSERT INTO t SELECT email FROM customers")
                .written
                .contains(&col("email"))
        );
        assert!(
            of("UPDATE customers SET name = email")
                .written
                .contains(&col("email"))
        );
        assert!(
            of("CREATE TABLE t AS SELECT email FROM customers")
                .written
                .contains(&col("email"))
        );
        assert!(
            of("SELECT email INTO t FROM customers")
                .written
                .contains(&col("email"))
        );
        assert!(
            of("CREATE VIEW v AS SELECT email FROM customers")
                .written
                .contains(&col("email"))
        );
        let l = of("UPDATE customers SET name = 'x' WHERE email = 'a' RETURNING email");
        assert!(l.written.is_empty(), "{:?}", l.written);
        assert_eq!(l.per_output, Some(vec![vec![col("email")]]));
    }

    #[test]
    fn values_stashed_in_notifications_and_settings_count_as_written_from_any_position() {
        assert!(
            of("SELECT pg_notify('c', email) FROM customers")
                .written
                .contains(&col("email"))
        );
        assert!(
            of("SELECT 1 FROM customers WHERE set_config('x.y', email, false) IS NOT NULL")
                .written
                .contains(&col("email"))
        );
        assert!(
            of("SELECT pg_catalog.pg_notify('c', upper(c.card)) FROM customers c")
                .written
                .contains(&col("card"))
        );
        assert!(of("SELECT pg_notify('c', 'constant')").written.is_empty());
        assert!(
            of("SELECT lo_put(4242, 0, convert_to(email, 'UTF8')) FROM customers")
                .written
                .contains(&col("email"))
        );
        assert!(
            of("SELECT setval('s', length(card)) FROM customers")
                .written
                .contains(&col("card"))
        );
    }

    #[test]
    fn references_in_conditions_and_orderings_are_filters() {
        for (sql, column) in [
            ("SELECT id FROM customers WHERE email LIKE 'a%'", "email"),
            (
                "SELECT id FROM customers c JOIN orders o ON o.mail = c.email",
                "email",
            ),
            ("SELECT id FROM customers ORDER BY card", "card"),
            ("SELECT count(*) FROM customers GROUP BY phone", "phone"),
            (
                "SELECT 1 FROM customers GROUP BY id HAVING max(email) > 'm'",
                "email",
            ),
            (
                "SELECT CASE WHEN email LIKE '%@x.com' THEN 1 ELSE 0 END FROM customers",
                "email",
            ),
            (
                "SELECT CASE card WHEN '4242' THEN 1 END FROM customers",
                "card",
            ),
            (
                "SELECT count(*) FILTER (WHERE ssn IS NULL) FROM customers",
                "ssn",
            ),
            (
                "SELECT rank() OVER (PARTITION BY email ORDER BY card) FROM customers",
                "card",
            ),
            ("SELECT DISTINCT ON (email) id FROM customers", "email"),
            ("SELECT DISTINCT email FROM customers", "email"),
            (
                "SELECT c.id FROM customers c JOIN (VALUES ('a@b.c')) g(email) USING (email)",
                "email",
            ),
            (
                "SELECT 1 FROM (SELECT email FROM customers INTERSECT SELECT 'a@b.c') s",
                "email",
            ),
            ("SELECT email FROM customers EXCEPT ALL SELECT 'x'", "email"),
            ("SELECT email FROM customers UNION SELECT 'x'", "email"),
            (
                "SELECT id FROM items WHERE EXISTS (SELECT 1 FROM customers WHERE email = 'x')",
                "email",
            ),
        ] {
            assert!(
                of(sql).filters.contains(&col(column)),
                "{sql}: {:?}",
                of(sql).filters
            );
        }
        assert!(of("SELECT email FROM customers").filters.is_empty());
        assert!(
            of("SELECT email FROM customers UNION ALL SELECT 'x'")
                .filters
                .is_empty()
        );
        assert!(
            of("SELECT c.id FROM customers c NATURAL JOIN (VALUES ('a@b.c')) g(email)")
                .filters
                .contains(&Ref::WholeRow)
        );
    }

    #[test]
    fn cursors_and_copy_take_their_query_lineage() {
        let l = of("DECLARE c CURSOR FOR SELECT upper(email) FROM customers");
        assert_eq!(l.per_output, Some(vec![vec![col("email")]]));
        let l = of("COPY (SELECT email FROM customers) TO STDOUT");
        assert!(l.all.contains(&col("email")));
    }
}
