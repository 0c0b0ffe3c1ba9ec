//! Read-only grants (`read_only` in the token): the gateway logs in with
//! `default_transaction_read_only` on, so Postgres itself refuses every write, whatever the
//! policy plugins say (or when none is loaded). Nothing may turn it off: a change of
//! `default_transaction_read_only` or `transaction_read_only` to anything but on — `SET`,
//! `SET LOCAL`, `set_config`, a function's `SET` clause, `SET TRANSACTION READ WRITE`,
//! `SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE`, `BEGIN`/`START TRANSACTION READ
//! WRITE` — is refused before it reaches Postgres, and since Postgres reports
//! `default_transaction_read_only` to the client, a change made where the parser cannot see (a
//! DO block) ends the session when its request cycle is answered. That is too late for code
//! that turns it off and commits in one go (a DO block or a procedure may COMMIT, and a
//! statement after a COMMIT in the same query string starts a read-write transaction): so a
//! read-only session may not run code the gateway cannot see into at all — DO, CALL,
//! user-defined functions — nor write `pg_settings`, nor send text the parser cannot read.
//! `RESET` returns to the value the session logged in with, on.

use crate::analysis::{SettingChange, SettingValue, Statement};

/// The settings a read-only grant keeps on.
const GUARDED: &[&str] = &["default_transaction_read_only", "transaction_read_only"];

/// Why `change` is refused in a read-only session, if it is.
pub fn refused_change(change: &SettingChange, read_only: bool) -> Option<String> {
    if !read_only || !GUARDED.contains(&change.name.as_str()) {
        return None;
    }
    match &change.value {
        SettingValue::Default => None,
        SettingValue::Literal(v) if is_on(v) && !change.at_run_time => None,
        _ => Some(format!(
            "{} cannot be changed: this session's grant is read-only",
            change.name
        )),
    }
}

/// Why a read-only session may not run `statements` (`opaque`: they run code the gateway
/// cannot see into), if it may not.
pub fn refused_statements(
    statements: &[Statement],
    opaque: bool,
    read_only: bool,
) -> Option<String> {
    if !read_only {
        return None;
    }
    if opaque {
        return Some(
            "a read-only grant may not run code the gateway cannot see into (a DO block, CALL or user-defined function)"
                .into(),
        );
    }
    statements
        .iter()
        .any(|s| s.tables_written.iter().any(|t| t.is_settings_view()))
        .then(|| "pg_settings cannot be written: this session's grant is read-only".into())
}

/// Why the upstream's report of `name` = `value` ends a read-only session, if it does.
pub fn reported(name: &str, value: &str, read_only: bool) -> Option<String> {
    (read_only && name == "default_transaction_read_only" && !is_on(value)).then(|| {
        format!(
            "terminating connection because {name} changed to \"{value}\" in a read-only session"
        )
    })
}

/// Whether Postgres reads `value` as a boolean true.
fn is_on(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "on" | "true" | "1" | "yes" | "y" | "t" | "tr" | "tru" | "ye"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::analyze_uncached;

    fn refused(sql: &str) -> bool {
        analyze_uncached(sql)
            .unwrap()
            .iter()
            .flat_map(|s| s.settings.clone())
            .any(|c| refused_change(&c, true).is_some())
    }

    #[test]
    fn a_read_only_session_may_not_turn_read_only_off_in_any_form() {
        for sql in [
            "SET default_transaction_read_only = off",
            "SET default_transaction_read_only TO false",
            "SET LOCAL transaction_read_only = 0",
            "SET SESSION transaction_read_only = no",
            "SELECT set_config('default_transaction_read_only', 'off', false)",
            "SELECT set_config('transaction_read_only', current_setting('x'), true)",
            "BEGIN READ WRITE",
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
            "SET TRANSACTION READ WRITE",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET default_transaction_read_only = off AS 'SELECT 1'",
        ] {
            assert!(refused(sql), "{sql}");
        }
        for sql in [
            "SET default_transaction_read_only = on",
            "RESET default_transaction_read_only",
            "RESET ALL",
            "BEGIN",
            "BEGIN READ ONLY",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SELECT 1",
        ] {
            assert!(!refused(sql), "{sql}");
        }
        let change = analyze_uncached("BEGIN READ WRITE").unwrap()[0].settings[0].clone();
        assert!(
            refused_change(&change, false).is_none(),
            "only read-only grants"
        );
    }

    #[test]
    fn a_read_only_session_runs_no_code_the_gateway_cannot_see_into_nor_writes_pg_settings() {
        let statements = |sql: &str| analyze_uncached(sql).unwrap();
        let update = statements("UPDATE pg_catalog.pg_settings SET setting = 'off'");
        assert!(refused_statements(&update, false, true).is_some());
        let select = statements("SELECT * FROM pg_settings");
        assert!(refused_statements(&select, false, true).is_none());
        assert!(
            refused_statements(&select, true, true).is_some(),
            "opaque code"
        );
        assert!(
            refused_statements(&update, true, false).is_none(),
            "only read-only grants"
        );
    }

    #[test]
    fn a_reported_change_to_read_write_ends_a_read_only_session() {
        assert!(reported("default_transaction_read_only", "off", true).is_some());
        assert!(reported("default_transaction_read_only", "on", true).is_none());
        assert!(reported("default_transaction_read_only", "off", false).is_none());
        assert!(reported("TimeZone", "UTC", true).is_none());
    }
}
