//! What a scoped grant covers: the statement text approvers saw, with the constants of its
//! data statements left open, and nothing else. Not pg_query's fingerprint: it folds `IN`
//! lists (a grant for `id = 42` would cover `id IN (1, 2, 3)`), ignores names, and is a fast
//! hash a requester could search for a collision with a granted statement.
//!
//! - Every token counts, comments included (an execution shows what it runs in one).
//! - A constant is left open only in a statement that starts as a data statement (`SELECT`,
//!   `INSERT`, `UPDATE`, `DELETE`, `MERGE`, `WITH`, `VALUES`, `TABLE`); in any other a constant
//!   is part of the command (`COPY ... TO PROGRAM '...'`, `SET role = '...'`, the arguments of
//!   an `EXECUTE`) and must match exactly.
//! - `true`, `false` and `NULL` are keywords, not constants: they stay.
//! - The key is SHA-256 (its first 8 bytes), so finding another text with a granted key is not
//!   a search a requester can run.

/// Token kinds (pg_query's scanner) that carry a constant value: FCONST SCONST USCONST BCONST
/// XCONST ICONST.
const CONSTANT_TOKENS: &[i32] = &[260, 261, 262, 263, 264, 266];

/// How a constant left open is shown to approvers.
const OPEN: &str = "<value>";

/// The statements a scoped grant for one text covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Stored with the grant and compared at each statement.
    pub key: u64,
    /// The text with each constant left open shown as `<value>`.
    pub covers: String,
}

impl Scope {
    /// The scope of `text`; `None` when Postgres' scanner cannot read it (no grant covers
    /// such a text).
    pub fn of(text: &str) -> Option<Scope> {
        let scanned = pg_query::scan(text).ok()?;
        let mut key = String::with_capacity(text.len());
        let mut covers = String::with_capacity(text.len());
        let mut copied = 0;
        // Whether the current statement's first token has been seen, and what it was.
        let mut first = true;
        let mut data = false;
        for token in &scanned.tokens {
            let (start, end) = (token.start as usize, token.end as usize);
            let word = text.get(start..end)?;
            let comment = matches!(token.token, 275 | 276);
            if first && !comment {
                first = false;
                data = is_data_keyword(word);
            }
            if data && CONSTANT_TOKENS.contains(&token.token) {
                key.push('\u{1}');
                covers.push_str(text.get(copied..start)?);
                covers.push_str(OPEN);
                copied = end;
            } else {
                key.push_str(word);
            }
            key.push('\0');
            if word == ";" {
                first = true;
            }
        }
        covers.push_str(text.get(copied..)?);
        let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest.as_ref()[..8]);
        Some(Scope {
            key: u64::from_be_bytes(bytes),
            covers,
        })
    }
}

fn is_data_keyword(word: &str) -> bool {
    [
        "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "WITH", "VALUES", "TABLE",
    ]
    .iter()
    .any(|k| k.eq_ignore_ascii_case(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> u64 {
        Scope::of(text).unwrap().key
    }

    #[test]
    fn constants_of_a_data_statement_are_left_open() {
        assert_eq!(
            key("DELETE FROM t WHERE customer_id = 42"),
            key("DELETE FROM t WHERE customer_id = 7")
        );
        assert_eq!(
            key("INSERT INTO t VALUES (1, 'a')"),
            key("INSERT INTO t VALUES (2.5, E'b')")
        );
        assert_eq!(
            Scope::of("DELETE FROM t WHERE customer_id = 42")
                .unwrap()
                .covers,
            "DELETE FROM t WHERE customer_id = <value>"
        );
    }

    #[test]
    fn a_scope_never_covers_another_shape() {
        let granted = key("DELETE FROM t WHERE customer_id = 42");
        for other in [
            "DELETE FROM t WHERE customer_id IN (1, 2, 3)",
            "DELETE FROM t WHERE customer_id = 42 OR true",
            "DELETE FROM u WHERE customer_id = 42",
            "DELETE FROM t WHERE customer_id = 42; DELETE FROM t",
            "DELETE FROM t WHERE customer_id = 42 -- and a comment",
            "delete from t where customer_id = 42",
        ] {
            assert_ne!(key(other), granted, "{other}");
        }
        assert_ne!(
            key("DELETE FROM t WHERE ok = false"),
            key("DELETE FROM t WHERE ok = true")
        );
    }

    #[test]
    fn constants_of_other_statements_are_part_of_the_command() {
        assert_ne!(
            key("COPY t TO PROGRAM 'cat'"),
            key("COPY t TO PROGRAM 'rm -rf /'")
        );
        assert_ne!(key("EXECUTE p(5)"), key("EXECUTE p(6)"));
        // Each statement of a string by its own first word.
        assert_eq!(
            Scope::of("SET x = 'a'; UPDATE t SET a = 1").unwrap().covers,
            "SET x = 'a'; UPDATE t SET a = <value>"
        );
        // What an execution runs is shown in a comment, and counts.
        assert_ne!(
            key("EXECUTE p\n-- p was prepared as: DELETE FROM t WHERE id = $1"),
            key("EXECUTE p\n-- p was prepared as: DELETE FROM t")
        );
    }
}
