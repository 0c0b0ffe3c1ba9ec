//! What a scoped grant covers: the statement text approvers saw, with the constants of its
//! data statements left open, and nothing else. Not pg_query's fingerprint: it folds `IN`
//! lists (a grant for `id = 42` would cover `id IN (1, 2, 3)`), ignores names, and is a fast
//! hash a requester could search for a collision with a granted statement.
//!
//! - Every token counts, comments included (an execution shows what it runs in one).
//! - A constant is left open only when every statement of the text is a data statement
//!   (`SELECT`, `INSERT`, `UPDATE`, `DELETE`, `MERGE`, `WITH`, `VALUES`, `TABLE`), and not
//!   inside a function's arguments (`pg_read_file('...')`, `set_config('role', ...)`) or
//!   before a cast (`'t'::regclass`): there a constant names what runs. In any other statement
//!   a constant is part of the command (`COPY ... TO PROGRAM '...'`, `SET role = '...'`, the
//!   arguments of an `EXECUTE`, a function body) and must match exactly.
//! - Bind values are open as a data statement's constants are; where a parameter is a
//!   function's argument, or the text is not data, the values must match too.
//! - `true`, `false` and `NULL` are keywords, not constants: they stay.
//! - The session's changes of what names mean (`search_path`, the role: the session's
//!   `NameContext`) count line by line: a grant made after `SET search_path = a` covers
//!   only sessions that ran the same changes.
//! - The key is SHA-256 (its first 8 bytes), so finding another text with a granted key is not
//!   a search a requester can run.

/// Token kinds (pg_query's scanner) that carry a constant value: FCONST SCONST USCONST BCONST
/// XCONST ICONST.
const CONSTANT_TOKENS: &[i32] = &[260, 261, 262, 263, 264, 266];
const IDENT: i32 = 258;
const PARAM: i32 = 267;
const TYPECAST: i32 = 268;
const SQL_COMMENT: i32 = 275;
const C_COMMENT: i32 = 276;

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
    /// The scope of `text` run with Bind `params` in a session whose changes of what names
    /// mean are `settings`; `None` when Postgres' scanner cannot read it (no grant covers such
    /// a text).
    pub fn of(text: &str, params: &[Option<String>], settings: &[String]) -> Option<Scope> {
        let scanned = pg_query::scan(text).ok()?;
        let tokens = &scanned.tokens;
        let word = |i: usize| text.get(tokens[i].start as usize..tokens[i].end as usize);
        let comment = |i: usize| matches!(tokens[i].token, SQL_COMMENT | C_COMMENT);
        // Constants are left open only if every statement is a data statement: a utility
        // statement (or a function body in one, whose `;` would look like a boundary) keeps
        // every constant.
        let mut all_data = true;
        let mut starts = true;
        for i in 0..tokens.len() {
            if comment(i) {
                continue;
            }
            let w = word(i)?;
            if starts {
                all_data &= is_data_keyword(w);
            }
            starts = w == ";";
        }
        let mut key = String::with_capacity(text.len());
        let mut covers = String::with_capacity(text.len());
        let mut copied = 0;
        // For each open parenthesis: whether it holds a function's arguments.
        let mut calls: Vec<bool> = Vec::new();
        // Bind values must match when a parameter is an argument, or the text not data.
        let mut values_count = !all_data;
        for i in 0..tokens.len() {
            let (start, end) = (tokens[i].start as usize, tokens[i].end as usize);
            let w = word(i)?;
            let in_call = calls.iter().any(|c| *c);
            match w {
                "(" => calls.push(i > 0 && names_a_function(&tokens[i - 1], word(i - 1)?)),
                ")" => {
                    calls.pop();
                }
                _ => {}
            }
            if tokens[i].token == PARAM && in_call {
                values_count = true;
            }
            // A constant cast to a type names something (`'t'::regclass`): it stays.
            let cast = tokens.get(i + 1).is_some_and(|t| t.token == TYPECAST);
            if all_data && !in_call && !cast && CONSTANT_TOKENS.contains(&tokens[i].token) {
                key.push('\u{1}');
                covers.push_str(text.get(copied..start)?);
                covers.push_str(OPEN);
                copied = end;
            } else {
                key.push_str(w);
            }
            key.push('\0');
        }
        covers.push_str(text.get(copied..)?);
        if values_count && !params.is_empty() {
            for value in params {
                match value {
                    Some(v) => key.push_str(&format!("\u{2}{}:{v}", v.len())),
                    None => key.push('\u{3}'),
                }
            }
            covers.push_str("\n-- with these parameter values");
        }
        for line in settings {
            key.push_str(&format!("\u{4}{}:{line}", line.len()));
        }
        if !settings.is_empty() {
            covers
                .push_str("\n-- in sessions that changed search_path and the role as this one did");
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest.as_ref()[..8]);
        Some(Scope {
            key: u64::from_be_bytes(bytes),
            covers,
        })
    }
}

/// Whether the token before an open parenthesis names a function (so the parenthesis holds
/// arguments): an identifier or a non-reserved keyword (`coalesce`, `left`), but not the
/// keywords that open a list of values.
fn names_a_function(token: &pg_query::protobuf::ScanToken, word: &str) -> bool {
    let name = token.token == IDENT || (1..=3).contains(&token.keyword_kind);
    name && !["values", "in"]
        .iter()
        .any(|k| k.eq_ignore_ascii_case(word))
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

    #[test]
    fn a_scope_binds_to_how_the_session_changed_what_names_mean() {
        let text = "DELETE FROM customers WHERE id = 42";
        let plain = Scope::of(text, &[], &[]).unwrap();
        let elsewhere = Scope::of(text, &[], &["SET search_path = evil".into()]).unwrap();
        assert_ne!(plain.key, elsewhere.key);
        assert!(
            elsewhere.covers.contains("search_path"),
            "{}",
            elsewhere.covers
        );
        assert_ne!(
            elsewhere.key,
            Scope::of(text, &[], &["SET search_path = evil, public".into()])
                .unwrap()
                .key
        );
    }

    fn key(text: &str) -> u64 {
        Scope::of(text, &[], &[]).unwrap().key
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
            Scope::of("DELETE FROM t WHERE customer_id = 42", &[], &[])
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
        // A text with any other statement keeps every constant (a function body's `;` is no
        // boundary to trust).
        assert_ne!(
            key("SET x = 'a'; UPDATE t SET a = 1"),
            key("SET x = 'a'; UPDATE t SET a = 2")
        );
        assert_ne!(
            key(
                "CREATE FUNCTION f() RETURNS void BEGIN ATOMIC SELECT 1; DELETE FROM t WHERE id = 1; END"
            ),
            key(
                "CREATE FUNCTION f() RETURNS void BEGIN ATOMIC SELECT 1; DELETE FROM t WHERE id = 2; END"
            )
        );
        // What an execution runs is shown in a comment, and counts.
        assert_ne!(
            key("EXECUTE p\n-- p was prepared as: DELETE FROM t WHERE id = $1"),
            key("EXECUTE p\n-- p was prepared as: DELETE FROM t")
        );
    }

    #[test]
    fn what_names_an_object_or_runs_stays_exact() {
        for (granted, other) in [
            (
                "SELECT pg_read_file('/tmp/a')",
                "SELECT pg_read_file('/etc/shadow')",
            ),
            (
                "SELECT set_config('work_mem', '1MB', false)",
                "SELECT set_config('role', 'admin', false)",
            ),
            ("SELECT nextval('a_seq')", "SELECT nextval('b_seq')"),
            (
                "SELECT * FROM t WHERE x = 'a'::regclass",
                "SELECT * FROM t WHERE x = 'b'::regclass",
            ),
            (
                "SELECT coalesce(a, 1) FROM t",
                "SELECT coalesce(a, 2) FROM t",
            ),
        ] {
            assert_ne!(key(granted), key(other), "{granted}");
        }
        // Values lists and IN lists stay open.
        assert_eq!(
            key("INSERT INTO t VALUES (1, 'a')"),
            key("INSERT INTO t VALUES (2, 'b')")
        );
        assert_eq!(
            key("SELECT * FROM t WHERE id IN (1, 2)"),
            key("SELECT * FROM t WHERE id IN (3, 4)")
        );
    }

    #[test]
    fn bind_values_count_where_they_are_arguments() {
        let data = "DELETE FROM t WHERE id = $1";
        let one = [Some("1".to_owned())];
        let two = [Some("2".to_owned())];
        assert_eq!(
            Scope::of(data, &one, &[]).unwrap().key,
            Scope::of(data, &two, &[]).unwrap().key
        );
        let call = "SELECT pg_terminate_backend($1)";
        assert_ne!(
            Scope::of(call, &one, &[]).unwrap().key,
            Scope::of(call, &two, &[]).unwrap().key
        );
        assert!(
            Scope::of(call, &one, &[])
                .unwrap()
                .covers
                .ends_with("-- with these parameter values")
        );
        let utility = "CALL purge($1)";
        assert_ne!(
            Scope::of(utility, &one, &[]).unwrap().key,
            Scope::of(utility, &two, &[]).unwrap().key
        );
    }
}
