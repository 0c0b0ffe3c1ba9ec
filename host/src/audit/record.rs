//! One audit record on disk: a JSON object on one line with the header fields `v` (schema
//! version), `seq`, `ts` and `prev` (the hash of the record before it) beside the event's own
//! fields. A record's hash is SHA-256 over its canonical form: the same JSON with object keys
//! sorted and no insignificant whitespace, so verification does not depend on how a JSON
//! library orders keys.

use serde_json::{Map, Value};

/// The schema version records are written with. Bump it when a field changes meaning or
/// goes away (adding a field does not).
pub const SCHEMA_VERSION: u64 = 1;

/// `prev` of the very first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `value` as canonical JSON text.
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Hex SHA-256 of a record's canonical form.
pub fn hash(value: &Value) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, canonical(value).as_bytes()).as_ref())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The record for `event` (a JSON object) at `seq`, chained to `prev`.
pub fn seal(event: Value, seq: u64, prev: &str, ts_ms: u64) -> Value {
    let mut record = match event {
        Value::Object(map) => map,
        other => {
            let mut map = Map::new();
            map.insert("event".into(), other);
            map
        }
    };
    record.insert("v".into(), SCHEMA_VERSION.into());
    record.insert("seq".into(), seq.into());
    record.insert("ts".into(), rfc3339_ms(ts_ms).into());
    record.insert("prev".into(), prev.into());
    Value::Object(record)
}

/// Milliseconds since the epoch as `2026-11-30T07:01:02.345Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canonical_form_sorts_keys_at_every_depth_and_drops_whitespace() {
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"z": [1, {"y": 2, "x": 3}], "c": "é\n"}}"#)
                .unwrap();
        assert_eq!(
            canonical(&a),
            r#"{"a":{"c":"é\n","z":[1,{"x":3,"y":2}]},"b":1}"#
        );
        let b: Value =
            serde_json::from_str(r#"{"a":{"z":[1,{"x":3,"y":2}],"c":"é\n"},"b":1}"#).unwrap();
        assert_eq!(hash(&a), hash(&b));
    }
}
