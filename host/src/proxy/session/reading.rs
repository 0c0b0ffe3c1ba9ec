//! One reading of the bytes. The gateway judges a statement by parsing its bytes as UTF-8 with
//! standard-conforming strings (pg_query's fixed assumptions); Postgres reads them in the
//! session's `client_encoding` and `standard_conforming_strings`. Where those differ the two
//! can see different statements: in SJIS, BIG5 or GBK a second byte can be `\` or `'`, so a
//! literal that ends for one reader goes on for the other; with `standard_conforming_strings =
//! off` a backslash escapes a quote for Postgres and not for the gateway. Either way a write can
//! hide inside what the gateway takes for a string. So both are fixed for the whole session:
//! the gateway logs in with them, refuses every statement that would change them, and ends a
//! session whose upstream reports them changed anyway (by a function or DO block it could not
//! see into).

use crate::analysis::{SettingChange, SettingValue};

/// The session's `client_encoding`, sent at login.
pub const CLIENT_ENCODING: &str = "UTF8";
/// The session's `standard_conforming_strings`, sent at login.
pub const STANDARD_CONFORMING_STRINGS: &str = "on";

/// Whether `name` names UTF-8 as Postgres reads encoding names (case and punctuation ignored):
/// `UTF8`, `utf-8`, `Unicode`.
pub fn is_utf8(name: &str) -> bool {
    let folded: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    matches!(folded.as_str(), "utf8" | "unicode")
}

/// `SQL_ASCII`: bytes pass unconverted, which over a UTF-8 database reads as UTF8 does (psql
/// asks for it in a C locale). The gateway logs in with UTF8 in its place.
pub fn is_passthrough(name: &str) -> bool {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .eq_ignore_ascii_case("sqlascii")
}

/// Whether a client may ask for `client_encoding = name` at login.
pub fn acceptable_client_encoding(name: &str) -> bool {
    is_utf8(name) || is_passthrough(name)
}

fn is_on(value: &str) -> bool {
    matches!(
        value.to_ascii_lowercase().as_str(),
        "on" | "true" | "yes" | "1" | "t" | "y"
    )
}

/// Why `change` would make Postgres read statements differently from the gateway, if it would.
pub fn refused_change(change: &SettingChange) -> Option<String> {
    let fixed = |setting: &str, to: &str| {
        format!("{setting} is fixed to {to} through sluice (the gateway reads statements so)")
    };
    match (change.name.as_str(), &change.value) {
        (_, SettingValue::Default) => None,
        ("client_encoding", SettingValue::Literal(v)) if is_utf8(v) => None,
        ("client_encoding", value) => Some(format!(
            "{}: {} refused",
            fixed("client_encoding", CLIENT_ENCODING),
            shown(value)
        )),
        ("standard_conforming_strings", SettingValue::Literal(v)) if is_on(v) => None,
        ("standard_conforming_strings", value) => Some(format!(
            "{}: {} refused",
            fixed("standard_conforming_strings", STANDARD_CONFORMING_STRINGS),
            shown(value)
        )),
        ("*", _) => Some(
            "set_config with a setting name that is not a literal is refused: it could change client_encoding or standard_conforming_strings, which are fixed through sluice"
                .to_owned(),
        ),
        _ => None,
    }
}

fn shown(value: &SettingValue) -> String {
    match value {
        SettingValue::Literal(v) => format!("\"{v}\""),
        _ => "a computed value".to_owned(),
    }
}

/// Why a ParameterStatus the upstream sent shows Postgres reading statements differently from
/// the gateway, if it does.
pub fn diverged(name: &str, value: &str) -> Option<String> {
    match name {
        "client_encoding" if !is_utf8(value) => Some(format!(
            "terminating connection because client_encoding changed to \"{value}\"; sluice reads statements as {CLIENT_ENCODING}"
        )),
        "standard_conforming_strings" if !is_on(value) => Some(format!(
            "terminating connection because standard_conforming_strings changed to \"{value}\"; sluice reads statements with it on"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(name: &str, value: SettingValue) -> SettingChange {
        SettingChange {
            name: name.into(),
            value,
            at_run_time: false,
        }
    }

    #[test]
    fn encoding_names_are_read_as_postgres_reads_them() {
        for utf8 in ["UTF8", "utf8", "UTF-8", "Unicode", "utf_8"] {
            assert!(is_utf8(utf8), "{utf8}");
        }
        for other in ["SJIS", "BIG5", "GBK", "LATIN1", "EUC_JP", "SQL_ASCII", ""] {
            assert!(!is_utf8(other), "{other}");
        }
        assert!(acceptable_client_encoding("sql_ascii"));
        assert!(!acceptable_client_encoding("SJIS"));
    }

    #[test]
    fn only_changes_that_keep_the_reading_pass() {
        let lit = |v: &str| SettingValue::Literal(v.into());
        assert!(refused_change(&change("client_encoding", lit("SJIS"))).is_some());
        assert!(refused_change(&change("client_encoding", SettingValue::Computed)).is_some());
        assert!(refused_change(&change("client_encoding", lit("utf-8"))).is_none());
        assert!(refused_change(&change("client_encoding", SettingValue::Default)).is_none());
        assert!(refused_change(&change("standard_conforming_strings", lit("off"))).is_some());
        assert!(refused_change(&change("standard_conforming_strings", lit("on"))).is_none());
        assert!(refused_change(&change("*", SettingValue::Computed)).is_some());
        assert!(
            refused_change(&change("*", SettingValue::Default)).is_none(),
            "RESET ALL"
        );
        assert!(refused_change(&change("search_path", lit("x"))).is_none());
    }

    #[test]
    fn a_report_of_another_reading_ends_the_session() {
        assert!(diverged("client_encoding", "SJIS").is_some());
        assert!(diverged("client_encoding", "UTF8").is_none());
        assert!(diverged("standard_conforming_strings", "off").is_some());
        assert!(diverged("standard_conforming_strings", "on").is_none());
        assert!(diverged("TimeZone", "UTC").is_none());
    }
}
