//! A single DML statement's shape: what it is apart from its constants, so that `... WHERE aid
//! = 1` and `... WHERE aid = 2` share one analysis (and a plugin's reusable decision). Two keys:
//! [`quick_key`], a byte scan for the plain SQL most statements are, and [`scanned_key`], the
//! real Postgres scanner for everything else. A key is never shared by statements whose
//! non-constant tokens differ; utility statements, which may carry meaning in constants
//! (`EXPLAIN (ANALYZE 'off')`), and strings of several statements have no shape.

/// Token kinds (pg_query's scanner) that carry a constant value.
const CONSTANT_TOKENS: &[i32] = &[260, 261, 262, 263, 264, 266]; // FCONST SCONST USCONST BCONST XCONST ICONST
const COMMENT_TOKENS: &[i32] = &[275, 276];

/// Where a constant was in a key.
const CONSTANT: char = '\u{1}';
/// The first character of every quick key, which no scanned key starts with.
const QUICK: char = '\u{2}';

fn is_dml_keyword(word: &str) -> bool {
    [
        "SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "VALUES", "TABLE", "MERGE",
    ]
    .iter()
    .any(|k| k.eq_ignore_ascii_case(word))
}

/// The shape by the real scanner: tokens, constants blanked, comments and spacing dropped. Costs
/// a scan and its protobuf round trip (~3 µs for a short statement).
pub fn scanned_key(sql: &str) -> Option<String> {
    let scanned = pg_query::scan(sql).ok()?;
    let mut key = String::with_capacity(sql.len());
    let mut seen_semicolon = false;
    let mut first = true;
    for token in &scanned.tokens {
        if COMMENT_TOKENS.contains(&token.token) {
            continue;
        }
        let text = sql.get(token.start as usize..token.end as usize)?;
        if seen_semicolon {
            return None;
        }
        if text == ";" {
            seen_semicolon = true;
            continue;
        }
        if first {
            first = false;
            if !is_dml_keyword(text) {
                return None;
            }
        }
        if CONSTANT_TOKENS.contains(&token.token) {
            key.push(CONSTANT);
        } else {
            key.push_str(text);
        }
        key.push('\0');
    }
    (!first).then_some(key)
}

/// Bytes that continue an identifier or keyword (Postgres' `ident_cont`, with every non-ASCII
/// byte as the scanner counts them).
fn continues_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// The shape by a byte scan: the text as it is, with each plain number and each standard
/// string constant blanked. Anything whose tokens are not certain from the bytes alone gives
/// `None` (and [`scanned_key`] decides): comments, backslashes, dollar quotes, prefixed strings
/// (`E'..'`, `B'..'`, `U&'..'`, `U&".."`), hexadecimal, octal, binary or underscored numbers,
/// a number run into a word, a NUL, more than one statement. So two texts with one quick key
/// differ only inside constants the real scanner would also find, and a quick key is never
/// coarser than the scanned one.
pub fn quick_key(sql: &str) -> Option<String> {
    let bytes = sql.as_bytes();
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    let word_end = bytes[start..]
        .iter()
        .position(|&b| !continues_word(b))
        .map_or(bytes.len(), |n| start + n);
    if !is_dml_keyword(&sql[start..word_end]) {
        return None;
    }
    let mut key = String::with_capacity(sql.len() + 1);
    key.push(QUICK);
    // Bytes of `sql` from here on not yet copied into the key.
    let mut copied = 0;
    let mut i = word_end;
    while i < bytes.len() {
        let b = bytes[i];
        let after_word = i > 0 && continues_word(bytes[i - 1]);
        match b {
            b'\'' if !after_word && bytes[i - 1] != b'&' => {
                let end = string_end(bytes, i)?;
                key.push_str(&sql[copied..i]);
                key.push(CONSTANT);
                copied = end;
                i = end;
            }
            b'"' if bytes[i - 1] != b'&' => i = quoted_identifier_end(bytes, i)?,
            b'0'..=b'9' if !after_word => {
                let end = number_end(bytes, i)?;
                key.push_str(&sql[copied..i]);
                key.push(CONSTANT);
                copied = end;
                i = end;
            }
            b'$' if !after_word => {
                // A parameter (`$1`) stays as it is; anything else may open a dollar quote.
                let digits = bytes[i + 1..].iter().take_while(|b| b.is_ascii_digit());
                let n = digits.count();
                if n == 0 {
                    return None;
                }
                i += 1 + n;
            }
            b';' => {
                if !bytes[i + 1..].iter().all(u8::is_ascii_whitespace) {
                    return None;
                }
                i = bytes.len();
            }
            b'\\' | b'\0' | b'\'' | b'"' => return None,
            b'-' if bytes.get(i + 1) == Some(&b'-') => return None,
            b'/' if bytes.get(i + 1) == Some(&b'*') => return None,
            _ => i += 1,
        }
    }
    key.push_str(&sql[copied..]);
    Some(key)
}

/// The end of the standard string constant opening at `open`: `''` is a quote inside it. No
/// backslash, which would mean something else under `standard_conforming_strings = off`.
fn string_end(bytes: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    loop {
        match bytes.get(i)? {
            b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => break,
            b'\\' | b'\0' => return None,
            _ => i += 1,
        }
    }
    let end = i + 1;
    // A constant run straight into a word or another quote is not plain.
    match bytes.get(end) {
        Some(&b) if continues_word(b) || b == b'\'' || b == b'"' => None,
        _ => Some(end),
    }
}

/// The end of the quoted identifier opening at `open`: `""` is a quote inside it.
fn quoted_identifier_end(bytes: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    loop {
        match bytes.get(i)? {
            b'"' if bytes.get(i + 1) == Some(&b'"') => i += 2,
            b'"' => return Some(i + 1),
            b'\0' => return None,
            _ => i += 1,
        }
    }
}

/// The end of the decimal number starting at `first`: digits, an optional fraction, an
/// optional exponent, and then neither a word nor another dot.
fn number_end(bytes: &[u8], first: usize) -> Option<usize> {
    let digits = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let mut i = first + digits(first);
    if bytes.get(i) == Some(&b'.') {
        let n = digits(i + 1);
        if n == 0 {
            return None;
        }
        i += 1 + n;
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(i + 1), Some(b'+' | b'-')));
        let n = digits(i + 1 + sign);
        if n == 0 {
            return None;
        }
        i += 1 + sign + n;
    }
    match bytes.get(i) {
        Some(&b) if continues_word(b) || b == b'.' || b == b'\'' || b == b'"' => None,
        _ => Some(i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scanned_key_keeps_identifiers_and_skips_utility_and_multi_statement_strings() {
        assert!(scanned_key("EXPLAIN (ANALYZE 'off') DELETE FROM t").is_none());
        assert!(scanned_key("SELECT 1; SELECT 2").is_none());
        assert!(scanned_key("SET ROLE x").is_none());
        assert_eq!(
            scanned_key("SELECT 'a', 1.5"),
            scanned_key("SELECT 'bb', 2.5")
        );
        assert_ne!(
            scanned_key("SELECT a FROM t1"),
            scanned_key("SELECT a FROM t2")
        );
    }

    #[test]
    fn plain_statements_differing_only_in_constants_share_a_quick_key() {
        let same = [
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = 83423;",
                "SELECT abalance FROM pgbench_accounts WHERE aid = 7;",
            ),
            (
                "UPDATE t SET a = a + -12 WHERE b = 'x''y' AND c = 1.5e-3",
                "UPDATE t SET a = a + -3 WHERE b = '' AND c = 2",
            ),
            (
                "insert into \"Odd \"\"name'\" values ('it''s', .5)",
                "insert into \"Odd \"\"name'\" values ('', .75)",
            ),
            (
                "SELECT * FROM t WHERE x = $1 AND y = 'a -- b /* c'",
                "SELECT * FROM t WHERE x = $1 AND y = 'ü'",
            ),
        ];
        for (a, b) in same {
            assert!(quick_key(a).is_some(), "{a}");
            assert_eq!(quick_key(a), quick_key(b), "{a} / {b}");
        }
    }

    #[test]
    fn a_quick_key_keeps_every_token_that_is_not_a_constant() {
        let differ = [
            ("SELECT a FROM t1", "SELECT a FROM t2"),
            ("SELECT * FROM allowed a", "SELECT * FROM secrets a"),
            ("SELECT $1", "SELECT $2"),
            ("SELECT \"a'b\" FROM t", "SELECT \"a'c\" FROM t"),
            ("SELECT x1 FROM t", "SELECT x2 FROM t"),
        ];
        for (a, b) in differ {
            assert_ne!(quick_key(a), quick_key(b), "{a} / {b}");
        }
    }

    #[test]
    fn whatever_bytes_alone_cannot_settle_has_no_quick_key() {
        for sql in [
            "SELECT 1 -- comment",
            "SELECT /* c */ 1",
            "SELECT E'a\\'b'",
            "SELECT 'a\\'",
            "SELECT $$x$$",
            "SELECT $tag$x$tag$",
            "SELECT B'101', 1",
            "SELECT X'1f'",
            "SELECT N'x'",
            "SELECT U&'d\\0061t'",
            "SELECT U&\"d!0061t\" UESCAPE '!' FROM t",
            "SELECT 0x1F",
            "SELECT 1_000",
            "SELECT 1abc",
            "SELECT 1.x",
            "SELECT 1..2",
            "SELECT 1e",
            "SELECT 'a''",
            "SELECT \"open",
            "SELECT 'a'b",
            "SELECT 1; SELECT 2",
            "SET x = 1",
            "EXPLAIN SELECT 1",
            "(SELECT 1)",
            "SELECTED 1",
            "SELECT 1\0",
        ] {
            assert_eq!(quick_key(sql), None, "{sql}");
        }
        assert!(quick_key("SELECT 1;  \n").is_some());
        assert_eq!(quick_key("SELECT 1;"), quick_key("SELECT 2;"));
    }

    #[test]
    fn statements_sharing_a_quick_key_share_the_real_scanners_key() {
        let corpus = [
            "SELECT 1",
            "SELECT 1.5",
            "SELECT .5",
            "SELECT 1e3",
            "SELECT 1.5E+3",
            "SELECT -1",
            "SELECT 'a'",
            "SELECT ''",
            "SELECT 'it''s'",
            "SELECT 'a'\n'b'",
            "SELECT 'a' 'b'",
            "SELECT t.5 FROM t",
            "SELECT t.x FROM t",
            "SELECT x1 FROM t",
            "SELECT x FROM t1",
            "SELECT $1",
            "SELECT $2",
            "SELECT a$1 FROM t",
            "SELECT \"a\"\"b\" FROM t",
            "SELECT \"a'b\" FROM t",
            "SELECT 'x'::regclass",
            "SELECT 1-1",
            "SELECT 1 - 1",
            "SELECT 2-3",
            "SELECT 1::int",
            "SELECT 99999999999999999999",
            "SELECT 'ü'",
            "UPDATE t SET a = 1 WHERE b = 2;",
            "UPDATE t SET a = 3 WHERE b = 4;",
            "SELECT * FROM t WHERE a IN (1, 2, 3)",
            "SELECT * FROM t WHERE a IN (4, 5, 6)",
        ];
        for a in corpus {
            for b in corpus {
                if quick_key(a).is_some() && quick_key(a) == quick_key(b) {
                    assert!(scanned_key(a).is_some(), "{a}");
                    assert_eq!(scanned_key(a), scanned_key(b), "{a} / {b}");
                }
            }
        }
    }

    #[test]
    fn quick_and_scanned_keys_never_meet() {
        assert_ne!(
            quick_key("SELECT 1").map(|k| k.chars().next()),
            scanned_key("SELECT 1").map(|k| k.chars().next())
        );
    }
}
