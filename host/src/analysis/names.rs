//! Names as the parse tree spells them.

use serde_json::Value;

/// Joins a list of String nodes (`{"node": {"String": {"sval": ...}}}`) with dots.
pub fn qualified_name(list: Option<&Value>) -> String {
    list.and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|n| n.pointer("/node/String/sval").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(".")
        })
        .unwrap_or_default()
}
