//! Whether a write can reach every row of its table: an UPDATE or DELETE whose WHERE cannot tell
//! rows apart, and a MERGE with an UPDATE or DELETE action that no condition limits. A guard on
//! "writes need a WHERE" that looks only for the clause is walked around with `WHERE true`, or
//! with `MERGE ... ON true WHEN MATCHED THEN DELETE`; what counts is whether a condition looks at
//! the rows being written.
//!
//! The rules, decided on the parse tree alone (no catalog, so uniqueness is unknown):
//! - A condition *looks at the target's rows* when it names a column of the target: qualified by
//!   the target's name or alias where no subquery's own FROM item takes that name, or
//!   unqualified outside a subquery when the target is the only relation in scope (no `FROM`,
//!   `USING` or MERGE source, where an unqualified name could be theirs), or `WHERE CURRENT OF`.
//!   `WHERE true`, `WHERE 1 = 1`, `WHERE EXISTS (SELECT 1 FROM u)`, a condition on a joined
//!   table alone or a whole row of one do not.
//! - UPDATE and DELETE are unfiltered without such a WHERE.
//! - A MERGE action `WHEN NOT MATCHED BY SOURCE THEN UPDATE|DELETE` reaches every target row
//!   that no source row matches (all of them, with an empty source or a false join): it is
//!   unfiltered unless its own `AND` condition looks at the target's rows.
//! - A `WHEN MATCHED THEN UPDATE|DELETE` action without such an `AND` condition is unfiltered
//!   unless the join condition pins the target: one of its top-level `AND` terms sets a target
//!   column equal to (or `IN`) constants or parameters, or to a column of a `VALUES` source
//!   (whose rows are the statement's own constants). `ON t.id = s.id` with a table `s` can
//!   match every row of `t`, so it does not pin.
//! - INSERT actions add rows and never count.

use serde_json::Value;

/// pg_query's `CmdType`.
const CMD_UPDATE: i64 = 3;
const CMD_DELETE: i64 = 5;
/// pg_query's `MergeMatchKind`.
const MERGE_WHEN_MATCHED: i64 = 1;
/// pg_query's `A_Expr_Kind` (the node is `AExpr` in the serialised tree).
const AEXPR_OP: i64 = 1;
const AEXPR_IN: i64 = 7;

/// Whether the write statement `stmt` (node type `node_type`) can reach every row of its table.
pub fn unfiltered(node_type: &str, stmt: &Value) -> bool {
    let targets = Targets {
        names: target_names(stmt),
        alone: match node_type {
            "UpdateStmt" => !non_empty(stmt.get("from_clause")),
            "DeleteStmt" => !non_empty(stmt.get("using_clause")),
            _ => false,
        },
    };
    match node_type {
        "UpdateStmt" | "DeleteStmt" => !looks_at_rows(stmt.get("where_clause"), &targets),
        "MergeStmt" => merge_unfiltered(stmt, &targets),
        _ => false,
    }
}

/// How a condition can name the write's target.
struct Targets {
    /// Its alias, else its name.
    names: Vec<String>,
    /// No other relation is in scope: an unqualified name outside a subquery is the target's.
    alone: bool,
}

fn non_empty(value: Option<&Value>) -> bool {
    value.is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
}

/// The names a column of the write's target can be qualified with: its alias, else its name
/// (and schema-qualified name).
fn target_names(stmt: &Value) -> Vec<String> {
    let Some(relation) = stmt.get("relation") else {
        return Vec::new();
    };
    let relation = relation.pointer("/node/RangeVar").unwrap_or(relation);
    if let Some(alias) = relation
        .pointer("/alias/aliasname")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
    {
        return vec![alias.to_owned()];
    }
    relation
        .get("relname")
        .and_then(Value::as_str)
        .map(|name| vec![name.to_owned()])
        .unwrap_or_default()
}

fn merge_unfiltered(stmt: &Value, targets: &Targets) -> bool {
    let pinned = pins_target(stmt, targets);
    clauses(stmt).any(|clause| {
        let command = clause.get("command_type").and_then(Value::as_i64);
        if !matches!(command, Some(CMD_UPDATE | CMD_DELETE)) {
            return false;
        }
        if looks_at_rows(clause.get("condition"), targets) {
            return false;
        }
        let matched = clause.get("match_kind").and_then(Value::as_i64) == Some(MERGE_WHEN_MATCHED);
        !(matched && pinned)
    })
}

fn clauses(stmt: &Value) -> impl Iterator<Item = &Value> {
    stmt.get("merge_when_clauses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.pointer("/node/MergeWhenClause"))
}

/// Whether `condition` names a column of the target (see the module doc).
fn looks_at_rows(condition: Option<&Value>, targets: &Targets) -> bool {
    match condition {
        Some(c) if !c.is_null() => names_target(c, targets, false, &[]),
        _ => false,
    }
}

/// `shadowed`: names the FROM items of enclosing subqueries take, which hide the target's.
fn names_target(value: &Value, targets: &Targets, in_subquery: bool, shadowed: &[String]) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(key, inner)| match key.as_str() {
            "CurrentOfExpr" => true,
            "ColumnRef" => column_of_target(inner, targets, in_subquery, shadowed),
            "SubLink" => {
                let mut hidden = shadowed.to_vec();
                if let Some(from) = inner.pointer("/subselect/node/SelectStmt/from_clause") {
                    from_names(from, &mut hidden);
                }
                names_target(inner, targets, true, &hidden)
            }
            _ => names_target(inner, targets, in_subquery, shadowed),
        }),
        Value::Array(items) => items
            .iter()
            .any(|item| names_target(item, targets, in_subquery, shadowed)),
        _ => false,
    }
}

/// The names the FROM items in `from` take (aliases, else relation names), nested joins
/// included.
fn from_names(from: &Value, out: &mut Vec<String>) {
    match from {
        Value::Array(items) => items.iter().for_each(|item| from_names(item, out)),
        Value::Object(map) => {
            for (key, inner) in map {
                match key.as_str() {
                    "RangeVar" => {
                        let alias = inner.pointer("/alias/aliasname").and_then(Value::as_str);
                        let name = inner.get("relname").and_then(Value::as_str);
                        out.extend(alias.or(name).map(str::to_owned));
                    }
                    "RangeSubselect" | "RangeFunction" | "RangeTableFunc" => {
                        out.extend(
                            inner
                                .pointer("/alias/aliasname")
                                .and_then(Value::as_str)
                                .map(str::to_owned),
                        );
                    }
                    "JoinExpr" => {
                        for side in ["larg", "rarg"] {
                            if let Some(side) = inner.get(side) {
                                from_names(side, out);
                            }
                        }
                        out.extend(
                            inner
                                .pointer("/alias/aliasname")
                                .and_then(Value::as_str)
                                .map(str::to_owned),
                        );
                    }
                    _ => from_names(inner, out),
                }
            }
        }
        _ => {}
    }
}

/// A ColumnRef that means a column of the target: qualified by a target name no enclosing
/// subquery hides, or unqualified outside a subquery while the target is alone in scope.
fn column_of_target(
    column_ref: &Value,
    targets: &Targets,
    in_subquery: bool,
    shadowed: &[String],
) -> bool {
    let names: Vec<&str> = column_ref
        .get("fields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|f| f.pointer("/node/String/sval").and_then(Value::as_str))
        .collect::<Option<Vec<_>>>()
        // `t.*` and friends (A_Star) name no single column, but a row: not a condition on it.
        .unwrap_or_default();
    match names.as_slice() {
        [] => false,
        [_column] => !in_subquery && targets.alone,
        [.., qualifier, _column] => {
            targets.names.iter().any(|t| t == qualifier) && !shadowed.iter().any(|s| s == qualifier)
        }
    }
}

/// Whether a top-level `AND` term of the MERGE's join condition pins a target column to
/// constants, parameters or a column of a VALUES source.
fn pins_target(stmt: &Value, targets: &Targets) -> bool {
    let targets = &targets.names;
    let values_source = values_source_name(stmt);
    let Some(condition) = stmt.get("join_condition").filter(|c| !c.is_null()) else {
        return false;
    };
    conjuncts(condition).into_iter().any(|term| {
        let Some(expr) = term.pointer("/node/AExpr") else {
            return false;
        };
        let kind = expr.get("kind").and_then(Value::as_i64);
        // Exactly `=` (or `pg_catalog.=`): `OPERATOR(evil.=)` could match anything.
        let operator = match super::names::qualified_name(expr.get("name")).as_str() {
            "=" | "pg_catalog.=" => Some("="),
            _ => None,
        };
        let (Some(left), Some(right)) = (expr.get("lexpr"), expr.get("rexpr")) else {
            return false;
        };
        let fixed = |side: &Value| {
            is_constant(side)
                || values_source
                    .as_deref()
                    .is_some_and(|source| is_column_of(side, source))
        };
        match (kind, operator) {
            (Some(AEXPR_OP), Some("=")) => {
                (is_target_column(left, targets) && fixed(right))
                    || (is_target_column(right, targets) && fixed(left))
            }
            (Some(AEXPR_IN), Some(_)) => {
                is_target_column(left, targets)
                    && right
                        .pointer("/node/List/items")
                        .and_then(Value::as_array)
                        .is_some_and(|items| items.iter().all(is_constant))
            }
            _ => false,
        }
    })
}

/// The top-level terms of an `AND` chain (the condition itself when it is not one).
fn conjuncts(condition: &Value) -> Vec<&Value> {
    match condition.pointer("/node/BoolExpr") {
        // BoolExprType: 1 AND_EXPR.
        Some(b) if b.get("boolop").and_then(Value::as_i64) == Some(1) => b
            .get("args")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(conjuncts)
            .collect(),
        _ => vec![condition],
    }
}

fn is_constant(value: &Value) -> bool {
    let node = value.get("node").unwrap_or(value);
    if node.get("AConst").is_some() || node.get("ParamRef").is_some() {
        return true;
    }
    // `'42'::int`, `$1::int`
    node.pointer("/TypeCast/arg").is_some_and(is_constant)
}

fn column_names(value: &Value) -> Option<Vec<&str>> {
    value
        .pointer("/node/ColumnRef/fields")
        .and_then(Value::as_array)?
        .iter()
        .map(|f| f.pointer("/node/String/sval").and_then(Value::as_str))
        .collect()
}

fn is_target_column(value: &Value, targets: &[String]) -> bool {
    matches!(column_names(value).as_deref(), Some([.., qualifier, _]) if targets.iter().any(|t| t == qualifier))
}

fn is_column_of(value: &Value, source: &str) -> bool {
    matches!(column_names(value).as_deref(), Some([.., qualifier, _]) if *qualifier == source)
}

/// The alias of a MERGE source that is a VALUES list (or a SELECT of constants without FROM):
/// its rows are the statement's own constants.
fn values_source_name(stmt: &Value) -> Option<String> {
    let source = stmt.pointer("/source_relation/node/RangeSubselect")?;
    let select = source.pointer("/subquery/node/SelectStmt")?;
    let has = |field: &str| {
        select.get(field).is_some_and(|v| match v {
            Value::Array(a) => !a.is_empty(),
            Value::Null => false,
            _ => true,
        })
    };
    let constant_rows = has("values_lists")
        || (!has("from_clause") && !has("larg") && !contains(select, "FuncCall"));
    if !constant_rows {
        return None;
    }
    source
        .pointer("/alias/aliasname")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn contains(value: &Value, key: &str) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(k, v)| k == key || contains(v, key)),
        Value::Array(items) => items.iter().any(|v| contains(v, key)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use crate::analysis::analyze_uncached;

    fn unfiltered(sql: &str) -> bool {
        let statements = analyze_uncached(sql).unwrap();
        statements.iter().any(|s| s.unfiltered_write)
    }

    #[test]
    fn a_where_that_does_not_look_at_the_rows_does_not_filter() {
        for sql in [
            "DELETE FROM t",
            "DELETE FROM t WHERE true",
            "DELETE FROM t WHERE 1 = 1",
            "UPDATE t SET a = 1 WHERE NOT false",
            "DELETE FROM t WHERE 'a' = 'a' OR false",
            "DELETE FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.x = 1)",
            "DELETE FROM t WHERE EXISTS (SELECT x FROM u WHERE x = 1)",
            "DELETE FROM t AS d USING u WHERE u.x = 1",
            "UPDATE t SET a = 1 WHERE (SELECT true)",
            "DELETE FROM t WHERE $1",
            // Found by an attacker's review: shadowed qualifiers, another relation's columns.
            "DELETE FROM t WHERE EXISTS (SELECT 1 FROM t WHERE t.id = 1)",
            "DELETE FROM t AS d WHERE EXISTS (SELECT 1 FROM u AS d WHERE d.x = 1)",
            "DELETE FROM t USING (SELECT 1) AS s(ok) WHERE ok = 1",
            "UPDATE t SET a = 1 FROM u WHERE flag",
            "DELETE FROM t USING u WHERE u IS NOT NULL",
        ] {
            assert!(unfiltered(sql), "{sql}");
        }
    }

    #[test]
    fn a_where_on_the_rows_filters() {
        for sql in [
            "DELETE FROM t WHERE id = 1",
            "UPDATE t SET a = 1 WHERE a IS NULL",
            "DELETE FROM s.t WHERE t.id IN (SELECT id FROM u)",
            "DELETE FROM t AS d WHERE EXISTS (SELECT 1 FROM u WHERE u.id = d.id)",
            "UPDATE t SET a = 1 WHERE CURRENT OF c",
            "UPDATE t SET a = u.a FROM u WHERE t.id = u.id",
        ] {
            assert!(!unfiltered(sql), "{sql}");
        }
    }

    #[test]
    fn merge_actions_that_can_reach_every_row_are_unfiltered() {
        for sql in [
            "MERGE INTO t USING u ON true WHEN MATCHED THEN DELETE",
            "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE",
            "MERGE INTO t USING (SELECT 1) s ON 1 = 1 WHEN MATCHED THEN UPDATE SET a = 0",
            "MERGE INTO t USING t AS s ON t.id = s.id WHEN MATCHED THEN DELETE",
            "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED AND u.flag THEN DELETE",
            "MERGE INTO t USING (VALUES (1)) v(id) ON true WHEN MATCHED THEN DELETE",
            "MERGE INTO t USING u ON t.id = 1 WHEN NOT MATCHED BY SOURCE THEN DELETE",
            "MERGE INTO t USING u ON t.id = u.id WHEN NOT MATCHED THEN INSERT VALUES (1) \
             WHEN MATCHED THEN UPDATE SET a = 1",
            "WITH x AS (MERGE INTO t USING u ON true WHEN MATCHED THEN DELETE RETURNING 1) \
             SELECT * FROM x",
            "EXPLAIN ANALYZE MERGE INTO t USING u ON true WHEN MATCHED THEN DELETE",
            "PREPARE p AS MERGE INTO t USING u ON true WHEN MATCHED THEN DELETE",
            "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE RETURNING merge_action()",
            "MERGE INTO t USING (SELECT true AS go) s ON true WHEN MATCHED AND go THEN DELETE",
            "MERGE INTO t USING u ON t.id OPERATOR(evil.=) 1 WHEN MATCHED THEN DELETE",
        ] {
            assert!(unfiltered(sql), "{sql}");
        }
    }

    #[test]
    fn merge_actions_limited_by_constants_or_their_own_condition_are_filtered() {
        for sql in [
            "MERGE INTO t USING u ON t.id = 42 WHEN MATCHED THEN DELETE",
            "MERGE INTO t AS x USING u ON x.id = $1 AND x.a = u.a WHEN MATCHED THEN DELETE",
            "MERGE INTO t USING u ON t.id IN (1, 2) WHEN MATCHED THEN UPDATE SET a = 1",
            "MERGE INTO t USING (VALUES (1, 'x')) v(id, name) ON t.id = v.id \
             WHEN MATCHED THEN UPDATE SET name = v.name WHEN NOT MATCHED THEN INSERT VALUES (v.id, v.name)",
            "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED AND t.stale THEN DELETE",
            "MERGE INTO t USING u ON t.id = u.id WHEN NOT MATCHED BY SOURCE AND t.a < 0 THEN DELETE",
            "MERGE INTO t USING u ON t.id = u.id WHEN NOT MATCHED THEN INSERT VALUES (u.id)",
        ] {
            assert!(!unfiltered(sql), "{sql}");
        }
    }
}
