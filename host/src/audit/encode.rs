//! The records written for every statement — `statement` and `result` — serialized by hand,
//! byte for byte as serde_json writes them (the tests hold the two to each other), every other
//! record by serde_json. They are most of the log, and serde_json spends most of a short
//! record's cost per field: it escapes every key at run time, and the flattened decision turns
//! a statement record into a map. A string that needs escaping is still escaped by serde_json.

use super::event::{Decided, Event, StatementRecord};

/// Appends `event`'s JSON object to `out`.
pub fn write(event: &Event, out: &mut Vec<u8>) -> serde_json::Result<()> {
    match event {
        Event::Statement(record) => statement(record, out),
        Event::Result {
            session,
            statement,
            part,
            outcome,
            tag,
            rows,
            sqlstate,
            duration_us,
        } => {
            out.extend_from_slice(b"{\"type\":\"result\",\"session\":");
            number(*session, out);
            out.extend_from_slice(b",\"statement\":");
            number(*statement, out);
            out.extend_from_slice(b",\"part\":");
            number(u64::from(*part), out);
            out.extend_from_slice(b",\"outcome\":");
            string(outcome.as_str(), out)?;
            out.extend_from_slice(b",\"tag\":");
            optional(tag.as_deref(), out)?;
            out.extend_from_slice(b",\"rows\":");
            optional_number(*rows, out);
            out.extend_from_slice(b",\"sqlstate\":");
            optional(sqlstate.as_deref(), out)?;
            out.extend_from_slice(b",\"duration_us\":");
            number(*duration_us, out);
            out.push(b'}');
            Ok(())
        }
        other => serde_json::to_writer(out, other),
    }
}

fn statement(record: &StatementRecord, out: &mut Vec<u8>) -> serde_json::Result<()> {
    let StatementRecord {
        session,
        subject,
        database,
        statement,
        protocol,
        prepared,
        text,
        kinds,
        tables_read,
        tables_written,
        decided,
        params,
        via,
    } = record;
    out.extend_from_slice(b"{\"type\":\"statement\",\"session\":");
    number(*session, out);
    out.extend_from_slice(b",\"subject\":");
    string(subject, out)?;
    out.extend_from_slice(b",\"database\":");
    string(database, out)?;
    out.extend_from_slice(b",\"statement\":");
    number(*statement, out);
    out.extend_from_slice(b",\"protocol\":");
    string(protocol.as_str(), out)?;
    out.extend_from_slice(b",\"prepared\":");
    optional_number(*prepared, out);
    out.extend_from_slice(b",\"text\":");
    optional(text.as_deref(), out)?;
    out.extend_from_slice(b",\"kinds\":");
    list(kinds.iter().copied(), out)?;
    out.extend_from_slice(b",\"tables_read\":");
    list(tables_read.iter().map(String::as_str), out)?;
    out.extend_from_slice(b",\"tables_written\":");
    list(tables_written.iter().map(String::as_str), out)?;
    let Decided {
        decision,
        plugin,
        plugin_hash,
        reason,
        approval,
        approvers,
    } = decided;
    out.extend_from_slice(b",\"decision\":");
    string(decision.as_str(), out)?;
    out.extend_from_slice(b",\"plugin\":");
    optional(plugin.as_deref(), out)?;
    out.extend_from_slice(b",\"plugin_hash\":");
    optional(plugin_hash.as_deref(), out)?;
    out.extend_from_slice(b",\"reason\":");
    optional(reason.as_deref(), out)?;
    out.extend_from_slice(b",\"approval\":");
    optional(approval.as_deref(), out)?;
    out.extend_from_slice(b",\"approvers\":");
    list(approvers.iter().map(String::as_str), out)?;
    out.extend_from_slice(b",\"params\":");
    match params {
        Some(params) => array(params.iter().map(Option::as_deref), optional, out)?,
        None => out.extend_from_slice(b"null"),
    }
    if let Some(via) = via {
        out.extend_from_slice(b",\"via\":");
        string(via, out)?;
    }
    out.push(b'}');
    Ok(())
}

fn number(n: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn optional_number(n: Option<u64>, out: &mut Vec<u8>) {
    match n {
        Some(n) => number(n, out),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string: as it is when nothing in it needs escaping, else as serde_json escapes it.
fn string(s: &str, out: &mut Vec<u8>) -> serde_json::Result<()> {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        return serde_json::to_writer(out, s);
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
    Ok(())
}

fn optional(s: Option<&str>, out: &mut Vec<u8>) -> serde_json::Result<()> {
    match s {
        Some(s) => string(s, out),
        None => {
            out.extend_from_slice(b"null");
            Ok(())
        }
    }
}

fn list<'a>(items: impl Iterator<Item = &'a str>, out: &mut Vec<u8>) -> serde_json::Result<()> {
    array(items, string, out)
}

/// A JSON array of `items`, each written by `element`.
fn array<T>(
    items: impl Iterator<Item = T>,
    element: impl Fn(T, &mut Vec<u8>) -> serde_json::Result<()>,
    out: &mut Vec<u8>,
) -> serde_json::Result<()> {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        element(item, out)?;
    }
    out.push(b']');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Decision, Outcome, Protocol};

    /// Strings a record can carry: plain, empty, every escape serde_json knows, control
    /// characters it writes as `\u00XX`, DEL, and multi-byte UTF-8.
    const AWKWARD: &[&str] = &[
        "SELECT abalance FROM pgbench_accounts WHERE aid = 42",
        "",
        "say \"hi\"",
        "C:\\back\\slash",
        "line\nbreak\ttab\rreturn\u{8}back\u{c}feed",
        "nul\u{0}unit\u{1f}del\u{7f}",
        "naïve — 日本語 🦀",
        "</script>/",
    ];

    fn decided(i: usize) -> Decided {
        let text = |k: usize| AWKWARD[(i + k) % AWKWARD.len()].to_owned();
        let decisions = [
            Decision::Undecided,
            Decision::Allow,
            Decision::Deny,
            Decision::Approval,
            Decision::Approved,
            Decision::ApprovalDenied,
            Decision::ApprovalExpired,
            Decision::Withdrawn,
            Decision::Error,
        ];
        Decided {
            decision: decisions[i % decisions.len()],
            plugin: i.is_multiple_of(2).then(|| text(1)),
            plugin_hash: i.is_multiple_of(3).then(|| text(2)),
            reason: (i % 2 == 1).then(|| text(3)),
            approval: i.is_multiple_of(4).then(|| text(4)),
            approvers: (0..i % 3).map(text).collect(),
        }
    }

    fn records() -> Vec<Event> {
        let mut events = Vec::new();
        for i in 0..AWKWARD.len() * 9 {
            let text = |k: usize| AWKWARD[(i + k) % AWKWARD.len()].to_owned();
            let protocols = [Protocol::Query, Protocol::Parse, Protocol::Bind];
            events.push(Event::Statement(Box::new(StatementRecord {
                session: i as u64 * 7919,
                subject: text(0),
                database: text(5),
                statement: u64::MAX - i as u64,
                protocol: protocols[i % 3],
                prepared: i.is_multiple_of(2).then_some(i as u64),
                text: (i % 3 != 2).then(|| text(2)),
                kinds: ["select", "insert", "copy-in"][..i % 4].to_vec(),
                tables_read: (0..i % 3).map(text).collect(),
                tables_written: (0..i % 2).map(|k| text(k + 1)).collect(),
                decided: decided(i),
                params: (i % 3 == 1)
                    .then(|| (0..i % 4).map(|k| (k % 2 == 0).then(|| text(k))).collect()),
                via: i.is_multiple_of(5).then_some("mcp"),
            })));
            let outcomes = [
                Outcome::Ok,
                Outcome::Error,
                Outcome::Suspended,
                Outcome::Skipped,
            ];
            events.push(Event::Result {
                session: i as u64,
                statement: i as u64 * 31,
                part: u32::MAX - i as u32,
                outcome: outcomes[i % 4],
                tag: i.is_multiple_of(2).then(|| text(0)),
                rows: (i % 3 != 0).then_some(i as u64 * 1000),
                sqlstate: (i % 2 == 1).then(|| text(1)),
                duration_us: i as u64 * 123_457,
            });
        }
        events
    }

    #[test]
    fn statement_and_result_records_are_written_byte_for_byte_as_serde_json_writes_them() {
        for event in records() {
            let mut by_hand = Vec::new();
            write(&event, &mut by_hand).unwrap();
            let by_serde = serde_json::to_vec(&event).unwrap();
            assert_eq!(
                String::from_utf8(by_hand).unwrap(),
                String::from_utf8(by_serde).unwrap(),
                "{event:?}"
            );
        }
    }

    #[test]
    fn other_records_are_written_by_serde_json() {
        let event = Event::SessionEnd {
            session: 3,
            subject: "say \"hi\"".into(),
            duration_ms: 12,
            statements: 4,
            reason: "client_terminated".into(),
        };
        let mut out = Vec::new();
        write(&event, &mut out).unwrap();
        assert_eq!(out, serde_json::to_vec(&event).unwrap());
    }
}
