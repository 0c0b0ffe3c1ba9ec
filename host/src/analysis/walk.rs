//! A complete walk of one statement's parse tree. pg_query's own `nodes()` skips node types
//! (array constructors, COLLATE, PREPARE, DECLARE ... ), and a function or table it skips is an
//! evasion, so the tree is serialised (the protobuf types derive `Serialize`) and every object in
//! it is visited. CTE names are scoped as Postgres scopes them: in a plain WITH a CTE sees only
//! the CTEs before it, in WITH RECURSIVE all of them; a name that no CTE in scope defines is a
//! table.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::names::qualified_name;
use super::statement::TableRef;

/// What the walk found.
#[derive(Debug, Default)]
pub struct Found {
    pub tables_read: Vec<TableRef>,
    pub tables_written: Vec<TableRef>,
    pub functions: Vec<String>,
    /// A data-modifying statement anywhere in the tree (CTEs, EXPLAIN, rules...).
    pub nested_write: bool,
    /// A write that can reach every row of its table anywhere in the tree (an UPDATE or
    /// DELETE without a WHERE on its rows, a MERGE action no condition limits: `filter.rs`).
    pub unfiltered_write: bool,
}

/// Fields of write statements that hold the relation being written.
const TARGET_FIELDS: &[(&str, &str)] = &[
    ("InsertStmt", "relation"),
    ("UpdateStmt", "relation"),
    ("DeleteStmt", "relation"),
    ("MergeStmt", "relation"),
    ("CreateStmt", "relation"),
    ("AlterTableStmt", "relation"),
    ("IndexStmt", "relation"),
    ("RenameStmt", "relation"),
    ("RefreshMatViewStmt", "relation"),
    ("ViewStmt", "view"),
    ("CreateTrigStmt", "relation"),
    ("RuleStmt", "relation"),
    ("CreatePolicyStmt", "table"),
    ("AlterPolicyStmt", "table"),
];

/// Fields holding lists of relations being written.
const TARGET_LIST_FIELDS: &[(&str, &str)] =
    &[("TruncateStmt", "relations"), ("LockStmt", "relations")];

const WRITE_NODES: &[&str] = &["InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"];

pub fn walk(stmt: &Value) -> Found {
    let mut walker = Walker {
        found: Found::default(),
        targets: HashSet::new(),
        seen_read: HashSet::new(),
        seen_written: HashSet::new(),
        seen_functions: HashSet::new(),
    };
    walker.collect_targets(stmt);
    walker.visit(stmt, &mut Vec::new());
    walker.found
}

struct Walker {
    found: Found,
    /// `location` of every RangeVar that is a write target.
    targets: HashSet<i64>,
    seen_read: HashSet<TableRef>,
    seen_written: HashSet<TableRef>,
    seen_functions: HashSet<String>,
}

impl Walker {
    fn collect_targets(&mut self, value: &Value) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    for (node, field) in TARGET_FIELDS {
                        if key == node
                            && let Some(target) = inner.get(field)
                        {
                            self.mark_target(target);
                        }
                    }
                    for (node, field) in TARGET_LIST_FIELDS {
                        if key == node
                            && let Some(Value::Array(items)) = inner.get(field)
                        {
                            items.iter().for_each(|item| self.mark_target(item));
                        }
                    }
                    match key.as_str() {
                        // COPY ... FROM writes its relation; COPY ... TO reads it.
                        "CopyStmt"
                            if inner.get("is_from").and_then(Value::as_bool) == Some(true) =>
                        {
                            if let Some(target) = inner.get("relation") {
                                self.mark_target(target);
                            }
                        }
                        // SELECT ... INTO and CREATE TABLE AS create a table.
                        "into_clause" | "into" => {
                            if let Some(target) = inner.get("rel") {
                                self.mark_target(target);
                            }
                        }
                        _ => {}
                    }
                    self.collect_targets(inner);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| self.collect_targets(v)),
            _ => {}
        }
    }

    fn mark_target(&mut self, value: &Value) {
        // Target fields hold either a bare RangeVar or a Node wrapping one.
        let range_var = value.pointer("/node/RangeVar").unwrap_or(value);
        if let Some(location) = range_var.get("location").and_then(Value::as_i64) {
            self.targets.insert(location);
        }
    }

    fn visit(&mut self, value: &Value, scope: &mut Vec<String>) {
        match value {
            Value::Object(map) => self.visit_object(map, scope),
            Value::Array(items) => items.iter().for_each(|v| self.visit(v, scope)),
            _ => {}
        }
    }

    fn visit_object(&mut self, map: &Map<String, Value>, scope: &mut Vec<String>) {
        // A statement with a WITH clause: its CTEs first, each with the names it can see,
        // then the statement body with all of them in scope.
        if let Some(with) = map.get("with_clause").filter(|w| !w.is_null()) {
            let ctes = with
                .get("ctes")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let recursive = with.get("recursive").and_then(Value::as_bool) == Some(true);
            let names: Vec<String> = ctes
                .iter()
                .filter_map(|c| c.pointer("/node/CommonTableExpr/ctename"))
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            let outer = scope.len();
            for (i, cte) in ctes.iter().enumerate() {
                let visible = if recursive { &names[..] } else { &names[..i] };
                scope.extend(visible.iter().cloned());
                self.visit(cte, scope);
                scope.truncate(outer);
            }
            scope.extend(names);
            for (key, inner) in map {
                if key != "with_clause" {
                    self.visit_entry(key, inner, scope);
                }
            }
            scope.truncate(outer);
            return;
        }
        // RangeVars appear both bare (typed fields such as InsertStmt.relation) and wrapped in
        // a Node; the shape identifies them either way.
        if map.contains_key("relname") && map.contains_key("relpersistence") {
            self.range_var(map, scope);
        }
        for (key, inner) in map {
            self.visit_entry(key, inner, scope);
        }
    }

    fn visit_entry(&mut self, key: &str, inner: &Value, scope: &mut Vec<String>) {
        match key {
            "FuncCall" => {
                let name = qualified_name(inner.get("funcname"));
                if !name.is_empty() && self.seen_functions.insert(name.clone()) {
                    self.found.functions.push(name);
                }
            }
            k if WRITE_NODES.contains(&k) => {
                self.found.nested_write = true;
                if super::filter::unfiltered(k, inner) {
                    self.found.unfiltered_write = true;
                }
            }
            // DROP names its relations as lists of strings rather than RangeVars.
            "DropStmt" => {
                for object in inner
                    .get("objects")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let Some(items) = object.pointer("/node/List/items") else {
                        continue;
                    };
                    let mut parts: Vec<String> = qualified_name(Some(items))
                        .split('.')
                        .map(str::to_owned)
                        .collect();
                    let name = parts.pop().unwrap_or_default();
                    let table = TableRef {
                        schema: parts.pop(),
                        name,
                    };
                    if !table.name.is_empty() && self.seen_written.insert(table.clone()) {
                        self.found.tables_written.push(table);
                    }
                }
            }
            _ => {}
        }
        self.visit(inner, scope);
    }

    fn range_var(&mut self, range_var: &Map<String, Value>, scope: &[String]) {
        let schema = range_var
            .get("schemaname")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let Some(name) = range_var.get("relname").and_then(Value::as_str) else {
            return;
        };
        if schema.is_none() && scope.iter().any(|cte| cte == name) {
            return;
        }
        let table = TableRef {
            schema,
            name: name.to_owned(),
        };
        let location = range_var.get("location").and_then(Value::as_i64);
        if location.is_some_and(|l| self.targets.contains(&l)) {
            if self.seen_written.insert(table.clone()) {
                self.found.tables_written.push(table);
            }
        } else if self.seen_read.insert(table.clone()) {
            self.found.tables_read.push(table);
        }
    }
}
