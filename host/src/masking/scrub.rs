//! Errors and notices while masking is active. Postgres echoes values in them: a unique
//! violation's DETAIL (`Key (email)=(a@b.c) already exists`), a check constraint's `Failing row
//! contains (...)`, `invalid input syntax for type integer: "a@b.c"` from `email::int`, and a
//! function can RAISE anything it read. So DETAIL, CONTEXT (where) and the internal query are
//! withheld, a quoted segment of the message or hint survives only if it is an identifier the
//! client may know (a catalog name, a name in the error's own fields, or text of the statement it
//! sent), and the message of a RAISE from user code is withheld whole. SQLSTATE, severity,
//! positions and the schema/table/column/constraint fields stay, so drivers and clients still
//! know what failed.

use bytes::{BufMut, Bytes, BytesMut};

const WITHHELD_DETAIL: &str = "sluice: detail withheld while masking is active";
const WITHHELD_MESSAGE: &str = "sluice: message from a function withheld while masking is active";

/// The ErrorResponse or NoticeResponse (`tag`, its `fields`) as the client may see it, or
/// `None` when it can pass unchanged. `known` says whether a quoted text may be shown.
pub fn scrub_message(
    tag: u8,
    fields: &[(u8, String)],
    known: &dyn Fn(&str) -> bool,
) -> Option<Bytes> {
    let own: Vec<&str> = fields
        .iter()
        .filter(|(f, _)| matches!(f, b's' | b't' | b'c' | b'd' | b'n'))
        .map(|(_, v)| v.as_str())
        .collect();
    let from_user_code = fields.iter().any(|(f, v)| {
        (*f == b'R' && v == "exec_stmt_raise") || (*f == b'C' && v.starts_with("P0"))
    });
    let shown = |text: &str| own.contains(&text) || known(text);
    let mut changed = false;
    let mut out = BytesMut::with_capacity(256);
    out.put_u8(tag);
    out.put_u32(0);
    for (field, value) in fields {
        let replaced: Option<String> = match field {
            b'M' if from_user_code => Some(WITHHELD_MESSAGE.into()),
            b'M' | b'H' => scrub_quoted(value, &shown),
            b'D' => Some(WITHHELD_DETAIL.into()),
            // Context (function call stack, may quote values) and the internal query.
            b'W' | b'q' => {
                changed = true;
                continue;
            }
            _ => None,
        };
        let value = match replaced {
            Some(new) if new != *value => {
                changed = true;
                new
            }
            _ => value.clone(),
        };
        out.put_u8(*field);
        out.put_slice(value.as_bytes());
        out.put_u8(0);
    }
    out.put_u8(0);
    if !changed {
        return None;
    }
    let len = (out.len() - 1) as u32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    Some(out.freeze())
}

/// `text` with each `"..."` segment that `shown` refuses replaced by `"***"`; `None` if
/// nothing changed.
fn scrub_quoted(text: &str, shown: &dyn Fn(&str) -> bool) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('"') else {
            // An unterminated quote: whatever follows may be a value.
            out.push_str("***");
            return Some(out);
        };
        let quoted = &after[..close];
        if shown(quoted) {
            out.push_str(quoted);
        } else {
            out.push_str("***");
            changed = true;
        }
        out.push('"');
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(fields: &[(u8, &str)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (f, v) in fields {
            body.push(*f);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        body
    }

    fn scrubbed(body: &[u8], known: &[&str]) -> Vec<(u8, String)> {
        let fields = crate::wire::backend::error_fields(body);
        let out = scrub_message(b'E', &fields, &|t| known.contains(&t)).expect("changed");
        crate::wire::backend::error_fields(&out[5..])
    }

    #[test]
    fn values_quoted_in_messages_are_hidden_and_identifiers_kept() {
        let body = error(&[
            (b'S', "ERROR"),
            (b'C', "22P02"),
            (
                b'M',
                "invalid input syntax for type integer: \"alice@example.com\"",
            ),
        ]);
        let out = scrubbed(&body, &["integer"]);
        assert_eq!(out[2].1, "invalid input syntax for type integer: \"***\"");
        let body = error(&[
            (b'S', "ERROR"),
            (b'C', "23505"),
            (
                b'M',
                "duplicate key value violates unique constraint \"customers_email_key\"",
            ),
            (b'D', "Key (email)=(alice@example.com) already exists."),
            (b'n', "customers_email_key"),
        ]);
        let out = scrubbed(&body, &[]);
        assert!(
            out[2].1.ends_with("\"customers_email_key\""),
            "{}",
            out[2].1
        );
        assert_eq!(out[3].1, WITHHELD_DETAIL);
        assert_eq!(out[4], (b'n', "customers_email_key".into()));
    }

    #[test]
    fn raised_messages_and_context_are_withheld() {
        let body = error(&[
            (b'S', "NOTICE"),
            (b'C', "00000"),
            (b'M', "email is alice@example.com"),
            (b'W', "PL/pgSQL function leak() line 3 at RAISE"),
            (b'R', "exec_stmt_raise"),
        ]);
        let out = scrubbed(&body, &[]);
        assert_eq!(out[2].1, WITHHELD_MESSAGE);
        assert!(out.iter().all(|(f, _)| *f != b'W'));
    }

    #[test]
    fn messages_without_values_pass_unchanged() {
        let body = error(&[
            (b'S', "ERROR"),
            (b'C', "42P01"),
            (b'M', "relation \"nope\" does not exist"),
        ]);
        let fields = crate::wire::backend::error_fields(&body);
        assert!(scrub_message(b'E', &fields, &|t| t == "nope").is_none());
    }
}
