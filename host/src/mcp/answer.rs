//! A statement's answer as a tool result: rows as JSON objects by column name, values typed
//! where JSON has the type (booleans, integers, floats, json) and text elsewhere, so nothing
//! loses precision (numeric, int8 beyond 2^53 stay exact as strings... see `value`).

use serde_json::{Map, Value, json};

use super::client::Answer;

/// The name of a built-in type, as `format_type` would print it; others by oid.
pub fn type_name(oid: u32) -> String {
    let name = match oid {
        16 => "boolean",
        17 => "bytea",
        18 => "\"char\"",
        19 => "name",
        20 => "bigint",
        21 => "smallint",
        23 => "integer",
        25 => "text",
        26 => "oid",
        114 => "json",
        700 => "real",
        701 => "double precision",
        1042 => "character",
        1043 => "character varying",
        1082 => "date",
        1083 => "time without time zone",
        1114 => "timestamp without time zone",
        1184 => "timestamp with time zone",
        1186 => "interval",
        1266 => "time with time zone",
        1700 => "numeric",
        2950 => "uuid",
        3802 => "jsonb",
        1000 => "boolean[]",
        1007 => "integer[]",
        1009 => "text[]",
        1016 => "bigint[]",
        _ => return format!("oid {oid}"),
    };
    name.to_owned()
}

/// A text value as JSON: booleans and integers that fit a double exactly as themselves,
/// json as its structure, everything else (numeric, timestamps, a masked value) as text.
fn value(oid: u32, text: &str) -> Value {
    match oid {
        16 => match text {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            _ => Value::String(text.to_owned()),
        },
        21 | 23 | 26 => text
            .parse::<i64>()
            .map_or_else(|_| Value::String(text.to_owned()), Value::from),
        // Beyond 2^53 a JSON reader's double would round it.
        20 => match text.parse::<i64>() {
            Ok(n) if n.unsigned_abs() <= 1 << 53 => Value::from(n),
            _ => Value::String(text.to_owned()),
        },
        700 | 701 => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Value::String(text.to_owned()), Value::Number),
        114 | 3802 => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())),
        _ => Value::String(text.to_owned()),
    }
}

/// The result of a `query` (or a tool built on it).
pub fn to_json(answer: &Answer) -> Value {
    let columns: Vec<Value> = answer
        .columns
        .iter()
        .map(|c| json!({"name": c.name, "type": type_name(c.type_oid)}))
        .collect();
    let rows: Vec<Value> = answer
        .rows
        .iter()
        .map(|row| {
            let mut object = Map::new();
            for (column, cell) in answer.columns.iter().zip(row) {
                let cell = cell
                    .as_deref()
                    .map_or(Value::Null, |text| value(column.type_oid, text));
                object.insert(column.name.clone(), cell);
            }
            Value::Object(object)
        })
        .collect();
    let mut result = json!({
        "columns": columns,
        "rows": rows,
        "row_count": answer.rows.len(),
        "truncated": answer.truncated,
        "command": answer.command,
        "transaction": transaction(answer.status),
    });
    if !answer.notices.is_empty() {
        result["notices"] = json!(answer.notices);
    }
    result
}

/// The session's transaction status after the statement, as an agent should read it.
pub fn transaction(status: u8) -> &'static str {
    match status {
        b'T' => "open",
        b'E' => "failed (ROLLBACK to continue)",
        _ => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_their_precision() {
        assert_eq!(value(23, "42"), json!(42));
        assert_eq!(value(20, "9007199254740993"), json!("9007199254740993"));
        assert_eq!(value(1700, "0.1"), json!("0.1"));
        assert_eq!(value(701, "NaN"), json!("NaN"));
        assert_eq!(value(16, "t"), json!(true));
        assert_eq!(value(3802, r#"{"a": 1}"#), json!({"a": 1}));
        // A masked value in an integer column stays what the masking plugin wrote.
        assert_eq!(value(23, "***"), json!("***"));
    }
}
