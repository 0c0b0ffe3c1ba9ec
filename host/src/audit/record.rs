//! One audit record on disk: a JSON object on one line. Its canonical form is the line exactly
//! as the writer serializes it — compact JSON, the header fields `v` (schema version), `seq`,
//! `ts` and `prev` (the hash of the record before it) first, then `type` and the event's
//! fields in schema order — and a record's hash is SHA-256 over those bytes (without the
//! newline). Any change to a line, whitespace included, changes its hash.

/// The schema version records are written with. Bump it when a field changes meaning or
/// goes away (adding a field does not).
pub const SCHEMA_VERSION: u64 = 1;

/// `prev` of the very first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Appends the line for an event serialized as `body` (`{"type":...}`) at `seq`, chained to
/// `prev`, stamped `ts` ([`rfc3339_ms`]), to `out` (with its newline) and returns its hash.
/// Serializing happens before, outside the log's lock.
pub fn seal_body(body: &[u8], seq: u64, prev: &str, ts: &str, out: &mut Vec<u8>) -> String {
    let start = out.len();
    // By hand, not `write!`: the header is most of a short record's cost.
    out.extend_from_slice(b"{\"v\":");
    out.extend_from_slice(itoa::Buffer::new().format(SCHEMA_VERSION).as_bytes());
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.extend_from_slice(b",\"ts\":\"");
    out.extend_from_slice(ts.as_bytes());
    out.extend_from_slice(b"\",\"prev\":\"");
    out.extend_from_slice(prev.as_bytes());
    out.extend_from_slice(b"\",");
    // The event's opening brace is the header's.
    match body.strip_prefix(b"{") {
        Some(rest) if rest.len() > 1 => out.extend_from_slice(rest),
        _ => out.extend_from_slice(b"\"type\":\"unserializable\"}"),
    }
    let hash = line_hash(&out[start..]);
    out.push(b'\n');
    hash
}

/// Hex SHA-256 of one line's bytes (without its newline).
pub fn line_hash(line: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, line).as_ref())
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// Milliseconds since the epoch as `2026-11-30T07:01:02.345Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Event;

    fn seal(event: &Event, seq: u64, prev: &str, ts_ms: u64, out: &mut Vec<u8>) -> String {
        seal_body(
            &serde_json::to_vec(event).unwrap(),
            seq,
            prev,
            &rfc3339_ms(ts_ms),
            out,
        )
    }

    #[test]
    fn a_sealed_line_is_one_json_object_with_the_header_first_and_its_hash_covers_its_bytes() {
        let mut out = Vec::new();
        let event = Event::AuditClose {};
        let hash = seal(&event, 7, GENESIS, 0, &mut out);
        let line = std::str::from_utf8(&out).unwrap();
        assert_eq!(
            line,
            format!(
                "{{\"v\":1,\"seq\":7,\"ts\":\"1970-01-01T00:00:00.000Z\",\"prev\":\"{GENESIS}\",\"type\":\"audit_close\"}}\n"
            )
        );
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["type"], "audit_close");
        assert_eq!(hash, line_hash(line.trim_end().as_bytes()));
        // The same event at the same place seals to the same bytes.
        let mut again = Vec::new();
        assert_eq!(seal(&event, 7, GENESIS, 0, &mut again), hash);
        assert_eq!(again, out);
    }
}
