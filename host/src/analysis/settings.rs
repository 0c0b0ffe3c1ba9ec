//! The settings a statement changes, in every way a statement can change one: `SET` (`LOCAL`,
//! `SESSION`, `NAMES`, `TIME ZONE`...), `RESET`, `set_config(...)`, a function's or procedure's
//! `SET` clause, `ALTER ROLE|DATABASE ... SET`, `ALTER SYSTEM`. All of them carry a
//! `VariableSetStmt` somewhere in the parse tree, or call `set_config`, so one walk over the
//! whole tree finds them wherever they hide.

use serde_json::Value;

use super::names::qualified_name;

/// One setting a statement changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingChange {
    /// The setting's name in lower case; `*` for `RESET ALL` and for a `set_config` whose
    /// name is not a literal (any setting could be meant).
    pub name: String,
    pub value: SettingValue,
    /// The name or the value is computed when the statement runs (`set_config` with an
    /// argument that is not a constant): the text alone does not say what is set.
    pub at_run_time: bool,
}

/// What a change sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingValue {
    /// A constant (`'x'`, `42`, `on`).
    Literal(String),
    /// The session's default back (`RESET`, `SET ... TO DEFAULT`).
    Default,
    /// Anything else: a parameter, an expression, a list, `FROM CURRENT`.
    Computed,
}

impl SettingValue {
    /// The literal text, if it is one.
    pub fn literal(&self) -> Option<&str> {
        match self {
            SettingValue::Literal(text) => Some(text),
            _ => None,
        }
    }
}

/// pg_query's `VariableSetKind`: 1 VAR_SET_VALUE, 2 VAR_SET_DEFAULT, 3 VAR_SET_CURRENT,
/// 4 VAR_SET_MULTI, 5 VAR_RESET, 6 VAR_RESET_ALL.
const VAR_SET_VALUE: i64 = 1;
const VAR_SET_DEFAULT: i64 = 2;
const VAR_SET_MULTI: i64 = 4;
const VAR_RESET: i64 = 5;
const VAR_RESET_ALL: i64 = 6;

pub fn changes(tree: &Value) -> Vec<SettingChange> {
    let mut found = Vec::new();
    collect(tree, &mut found);
    found
}

fn collect(value: &Value, found: &mut Vec<SettingChange>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match key.as_str() {
                    // `setstmt` holds a bare VariableSetStmt (ALTER ROLE, DATABASE, SYSTEM).
                    // SET TRANSACTION ..., SET SESSION CHARACTERISTICS AS TRANSACTION ...: one
                    // change per characteristic.
                    "VariableSetStmt" | "setstmt"
                        if inner.get("kind").and_then(Value::as_i64) == Some(VAR_SET_MULTI) =>
                    {
                        let prefix = match inner.get("name").and_then(Value::as_str) {
                            Some("SESSION CHARACTERISTICS") => "default_",
                            _ => "",
                        };
                        characteristics(inner.get("args"), prefix, found);
                    }
                    "VariableSetStmt" | "setstmt" if inner.is_object() => {
                        found.push(variable_set(inner))
                    }
                    // BEGIN / START TRANSACTION with READ WRITE, ISOLATION LEVEL...: what the
                    // transaction runs with.
                    "TransactionStmt" => characteristics(inner.get("options"), "", found),
                    "FuncCall" if is_set_config(inner) => found.push(set_config(inner)),
                    // DISCARD ALL resets every setting, the session authorization included.
                    // (DiscardMode 1: ALL.)
                    "DiscardStmt" if inner.get("target").and_then(Value::as_i64) == Some(1) => {
                        found.push(SettingChange {
                            name: "*".into(),
                            value: SettingValue::Default,
                            at_run_time: false,
                        })
                    }
                    _ => {}
                }
                collect(inner, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, found)),
        _ => {}
    }
}

/// The transaction characteristics a `SET TRANSACTION`, `SET SESSION CHARACTERISTICS` or
/// `BEGIN` lists (`transaction_read_only`, `transaction_isolation`, `transaction_deferrable`),
/// as changes of those settings (`prefix` `default_` for the session's defaults).
fn characteristics(options: Option<&Value>, prefix: &str, found: &mut Vec<SettingChange>) {
    let Some(options) = options.and_then(Value::as_array) else {
        return;
    };
    for option in options {
        let element = option.get("node").unwrap_or(option).get("DefElem");
        let Some(name) = element
            .and_then(|e| e.get("defname"))
            .and_then(Value::as_str)
        else {
            continue;
        };
        let value = element
            .and_then(|e| e.get("arg"))
            .and_then(literal)
            .map_or(SettingValue::Computed, SettingValue::Literal);
        found.push(SettingChange {
            name: format!("{prefix}{}", name.to_ascii_lowercase()),
            value,
            at_run_time: false,
        });
    }
}

fn variable_set(stmt: &Value) -> SettingChange {
    let kind = stmt.get("kind").and_then(Value::as_i64);
    let name = stmt
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty() && kind != Some(VAR_RESET_ALL))
        .map_or_else(|| "*".to_owned(), str::to_ascii_lowercase);
    let value = match kind {
        Some(VAR_SET_VALUE) => {
            let args = stmt.get("args").and_then(Value::as_array);
            match args.map(Vec::as_slice) {
                Some([only]) => literal(only).map_or(SettingValue::Computed, SettingValue::Literal),
                _ => SettingValue::Computed,
            }
        }
        Some(VAR_SET_DEFAULT | VAR_RESET | VAR_RESET_ALL) => SettingValue::Default,
        _ => SettingValue::Computed,
    };
    SettingChange {
        name,
        value,
        at_run_time: false,
    }
}

fn is_set_config(call: &Value) -> bool {
    let name = qualified_name(call.get("funcname")).to_ascii_lowercase();
    name == "set_config" || name == "pg_catalog.set_config"
}

fn set_config(call: &Value) -> SettingChange {
    let args = call.get("args").and_then(Value::as_array);
    let arg = |i: usize| args.and_then(|a| a.get(i)).and_then(literal);
    SettingChange {
        name: arg(0).map_or_else(|| "*".to_owned(), |n| n.to_ascii_lowercase()),
        value: arg(1).map_or(SettingValue::Computed, SettingValue::Literal),
        at_run_time: arg(0).is_none() || arg(1).is_none(),
    }
}

/// The text of a constant (`'x'`, `42`, `on`, `'x'::text`).
fn literal(value: &Value) -> Option<String> {
    let node = value.get("node").unwrap_or(value);
    if let Some(cast) = node.pointer("/TypeCast/arg") {
        return literal(cast);
    }
    let constant = node.get("AConst")?;
    if let Some(s) = constant.pointer("/val/Sval/sval").and_then(Value::as_str) {
        return Some(s.to_owned());
    }
    if let Some(i) = constant.pointer("/val/Ival/ival").and_then(Value::as_i64) {
        return Some(i.to_string());
    }
    if let Some(f) = constant.pointer("/val/Fval/fval").and_then(Value::as_str) {
        return Some(f.to_owned());
    }
    if let Some(b) = constant
        .pointer("/val/Boolval/boolval")
        .and_then(Value::as_bool)
    {
        return Some(if b { "on" } else { "off" }.to_owned());
    }
    // `SET x = 0`: a zero integer is serialised without its value.
    constant
        .pointer("/val/Ival")
        .filter(|v| v.get("ival").is_none())
        .map(|_| "0".to_owned())
}

#[cfg(test)]
mod tests {
    use super::{SettingChange, SettingValue};
    use crate::analysis::analyze_uncached;

    fn changes(sql: &str) -> Vec<(String, SettingValue)> {
        analyze_uncached(sql)
            .unwrap()
            .iter()
            .flat_map(|s| s.settings.clone())
            .map(|SettingChange { name, value, .. }| (name, value))
            .collect()
    }

    fn lit(text: &str) -> SettingValue {
        SettingValue::Literal(text.into())
    }

    fn named(sql: &str) -> Vec<String> {
        changes(sql).into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn every_way_of_changing_a_setting_is_found() {
        for (sql, setting) in [
            ("SET search_path = evil, public", "search_path"),
            ("SET LOCAL search_path TO evil", "search_path"),
            ("SET SESSION search_path = DEFAULT", "search_path"),
            ("RESET search_path", "search_path"),
            ("SET NAMES 'SJIS'", "client_encoding"),
            ("SET client_encoding = 'BIG5'", "client_encoding"),
            (
                "SELECT set_config('search_path', 'evil', false)",
                "search_path",
            ),
            (
                "SELECT pg_catalog.set_config('Search_Path', 'evil', true)",
                "search_path",
            ),
            (
                "SELECT 1 WHERE set_config('role', 'admin', false) IS NOT NULL",
                "role",
            ),
            (
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = evil AS 'SELECT 1'",
                "search_path",
            ),
            ("ALTER FUNCTION f() SET search_path = evil", "search_path"),
            ("ALTER PROCEDURE p() RESET search_path", "search_path"),
            ("ALTER ROLE bob SET search_path = evil", "search_path"),
            (
                "ALTER DATABASE app SET standard_conforming_strings = off",
                "standard_conforming_strings",
            ),
            ("ALTER SYSTEM SET backslash_quote = on", "backslash_quote"),
            ("SET ROLE admin", "role"),
            ("SET SESSION AUTHORIZATION admin", "session_authorization"),
            ("RESET ALL", "*"),
            ("DISCARD ALL", "*"),
            ("SELECT set_config(current_user, 'x', false)", "*"),
            (
                "PREPARE p AS SELECT set_config('search_path', $1, false)",
                "search_path",
            ),
            (
                "EXPLAIN ANALYZE SELECT set_config('search_path', 'x', false)",
                "search_path",
            ),
        ] {
            assert!(
                named(sql).contains(&setting.to_owned()),
                "{sql}: {:?}",
                named(sql)
            );
        }
        assert!(named("SELECT current_setting('search_path')").is_empty());
        assert!(named("SHOW search_path").is_empty());
    }

    #[test]
    fn transaction_characteristics_are_changes_of_their_settings() {
        assert_eq!(
            changes("BEGIN READ WRITE"),
            [("transaction_read_only".into(), lit("0"))]
        );
        assert_eq!(
            changes("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY"),
            [
                ("transaction_isolation".into(), lit("serializable")),
                ("transaction_read_only".into(), lit("1"))
            ]
        );
        assert_eq!(
            changes("SET TRANSACTION READ WRITE"),
            [("transaction_read_only".into(), lit("0"))]
        );
        assert_eq!(
            changes("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"),
            [("default_transaction_read_only".into(), lit("0"))]
        );
        assert!(changes("BEGIN").is_empty());
        assert!(changes("COMMIT").is_empty());
    }

    #[test]
    fn literal_values_are_kept() {
        assert_eq!(
            changes("SET client_encoding = 'SJIS'"),
            [("client_encoding".into(), lit("SJIS"))]
        );
        assert_eq!(
            changes("SET standard_conforming_strings = off"),
            [("standard_conforming_strings".into(), lit("off"))]
        );
        assert_eq!(
            changes("SET statement_timeout = 0"),
            [("statement_timeout".into(), lit("0"))]
        );
        assert_eq!(
            changes("SET statement_timeout = '5min'"),
            [("statement_timeout".into(), lit("5min"))]
        );
        assert_eq!(
            changes("SELECT set_config('statement_timeout', $1, false)"),
            [("statement_timeout".into(), SettingValue::Computed)]
        );
        assert_eq!(
            changes("RESET client_encoding"),
            [("client_encoding".into(), SettingValue::Default)]
        );
        assert_eq!(
            changes("SET client_encoding TO DEFAULT"),
            [("client_encoding".into(), SettingValue::Default)]
        );
        assert_eq!(changes("RESET ALL"), [("*".into(), SettingValue::Default)]);
    }
}
