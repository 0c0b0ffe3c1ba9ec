//! Which startup parameters a client may pass to Postgres. Startup parameters and `options` can
//! change who the session acts as (`role`, `session_authorization`) or what names resolve to
//! (`search_path`), so only settings known to be harmless pass; anything else is refused by name.
//! `client_encoding` passes only as UTF8 (or SQL_ASCII, read the same over a UTF-8 database):
//! the gateway itself logs in with UTF8 and standard-conforming strings (see `reading.rs`).

use crate::proxy::session::reading;

/// Startup parameters relayed to Postgres as they are (compared case-insensitively, as Postgres
/// compares setting names).
const RELAYED_PARAMS: &[&str] = &[
    "datestyle",
    "timezone",
    "extra_float_digits",
    "intervalstyle",
    "bytea_output",
];

/// Settings a client may set through `options` (`-c name=value` / `--name=value`).
const OPTION_SETTINGS: &[&str] = &[
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "transaction_timeout",
    "timezone",
    "datestyle",
    "intervalstyle",
    "extra_float_digits",
    "client_encoding",
    "bytea_output",
    "client_min_messages",
    "default_transaction_isolation",
    "default_transaction_read_only",
];

/// A refused startup, with the SQLSTATE and message the client gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

fn refuse(code: &'static str, message: String) -> Refusal {
    Refusal { code, message }
}

/// A client's startup request after the parameter policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientStartup {
    pub user: String,
    pub database: String,
    pub application_name: Option<String>,
    /// Allowed parameters, relayed as sent.
    pub settings: Vec<(String, String)>,
    /// Allowed `options` settings, normalised to lower-case names.
    pub option_settings: Vec<(String, String)>,
    /// `_pq_.` protocol options the client asked for; none is supported.
    pub protocol_options: Vec<String>,
}

impl ClientStartup {
    pub fn from_params(params: Vec<(String, String)>) -> Result<ClientStartup, Refusal> {
        use crate::wire::sqlstate::{INSUFFICIENT_PRIVILEGE, PROTOCOL_VIOLATION};
        let mut user = None;
        let mut database = None;
        let mut startup = ClientStartup {
            user: String::new(),
            database: String::new(),
            application_name: None,
            settings: Vec::new(),
            option_settings: Vec::new(),
            protocol_options: Vec::new(),
        };
        for (name, value) in params {
            let lower = name.to_ascii_lowercase();
            match lower.as_str() {
                "user" => user = Some(value),
                "database" => database = Some(value),
                "application_name" => startup.application_name = Some(value),
                "options" => startup.option_settings = parse_options(&value)?,
                "replication" => {
                    return Err(refuse(
                        INSUFFICIENT_PRIVILEGE,
                        "replication connections are not allowed through sluice".into(),
                    ));
                }
                _ if lower.starts_with("_pq_.") => startup.protocol_options.push(name),
                // Checked, then replaced by the gateway's own (see `upstream_params`).
                "client_encoding" => check_client_encoding(&value)?,
                _ if RELAYED_PARAMS.contains(&lower.as_str()) => {
                    startup.settings.push((name, value))
                }
                _ => {
                    return Err(refuse(
                        INSUFFICIENT_PRIVILEGE,
                        format!("startup parameter \"{name}\" is not allowed through sluice"),
                    ));
                }
            }
        }
        for (name, value) in &startup.option_settings {
            if name == "client_encoding" {
                check_client_encoding(value)?;
            }
        }
        startup
            .option_settings
            .retain(|(name, _)| name != "client_encoding");
        startup.user = user.filter(|u| !u.is_empty()).ok_or_else(|| {
            refuse(
                PROTOCOL_VIOLATION,
                "no user name specified in startup packet".into(),
            )
        })?;
        // Postgres' own default: the database is named like the user.
        startup.database = database
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| startup.user.clone());
        Ok(startup)
    }

    /// Refuses a `statement_timeout` in `options` above `budget` (zero: no budget).
    pub fn check_statement_timeout(&self, budget: std::time::Duration) -> Result<(), Refusal> {
        for (name, value) in &self.option_settings {
            if name == "statement_timeout" && !crate::proxy::session::runaway::within(value, budget)
            {
                return Err(refuse(
                    crate::wire::sqlstate::INSUFFICIENT_PRIVILEGE,
                    format!(
                        "statement_timeout \"{value}\" is above this gateway's budget of {} ([limits] statement_timeout)",
                        humantime::format_duration(budget)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The parameters of the upstream startup message: the gateway's own role and database,
    /// the client's allowed settings, an `application_name` that names the real subject, and
    /// the statement budget (zero: none) unless the client asked for less.
    pub fn upstream_params(
        &self,
        subject: &str,
        upstream_user: &str,
        upstream_database: &str,
        statement_budget: std::time::Duration,
    ) -> Vec<(String, String)> {
        let application_name = match &self.application_name {
            Some(app) if !app.is_empty() => format!("sluice:{subject}:{app}"),
            _ => format!("sluice:{subject}"),
        };
        let mut params = vec![
            ("user".to_owned(), upstream_user.to_owned()),
            ("database".to_owned(), upstream_database.to_owned()),
            ("application_name".to_owned(), application_name),
        ];
        params.extend(self.settings.iter().cloned());
        // After the client's: one reading of the bytes for the whole session. As startup
        // parameters they also override any ALTER ROLE or ALTER DATABASE default.
        params.push((
            "client_encoding".to_owned(),
            reading::CLIENT_ENCODING.to_owned(),
        ));
        params.push((
            "standard_conforming_strings".to_owned(),
            reading::STANDARD_CONFORMING_STRINGS.to_owned(),
        ));
        // `options` are applied before startup parameters, so a lower value the client asked
        // for goes here, in place of the budget.
        let asked = self
            .option_settings
            .iter()
            .find(|(name, _)| name == "statement_timeout")
            .and_then(|(_, value)| crate::proxy::session::runaway::parse_timeout(value));
        let timeout = match asked {
            Some(asked)
                if !asked.is_zero()
                    && (statement_budget.is_zero() || asked <= statement_budget) =>
            {
                Some(asked)
            }
            _ if statement_budget.is_zero() => None,
            _ => Some(statement_budget),
        };
        if let Some(timeout) = timeout {
            params.push((
                "statement_timeout".to_owned(),
                timeout.as_millis().max(1).to_string(),
            ));
        }
        if !self.option_settings.is_empty() {
            let options = self
                .option_settings
                .iter()
                .map(|(k, v)| format!("-c {}={}", escape_option(k), escape_option(v)))
                .collect::<Vec<_>>()
                .join(" ");
            params.push(("options".to_owned(), options));
        }
        params
    }
}

fn check_client_encoding(value: &str) -> Result<(), Refusal> {
    if reading::acceptable_client_encoding(value) {
        return Ok(());
    }
    Err(refuse(
        crate::wire::sqlstate::INSUFFICIENT_PRIVILEGE,
        format!(
            "client_encoding \"{value}\" is not allowed through sluice: sessions read statements as {}",
            reading::CLIENT_ENCODING
        ),
    ))
}

/// Splits `options` the way Postgres does (whitespace separates, backslash escapes the next
/// character) and accepts only `-c name=value` / `--name=value` with an allowed name.
fn parse_options(options: &str) -> Result<Vec<(String, String)>, Refusal> {
    use crate::wire::sqlstate::INSUFFICIENT_PRIVILEGE;
    let words = split_options(options);
    let mut settings = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let assignment = if word == "-c" {
            words.next().ok_or_else(|| {
                refuse(INSUFFICIENT_PRIVILEGE, "option -c without a setting".into())
            })?
        } else if let Some(rest) = word.strip_prefix("-c") {
            rest.to_owned()
        } else if let Some(rest) = word.strip_prefix("--") {
            rest.to_owned()
        } else {
            return Err(refuse(
                INSUFFICIENT_PRIVILEGE,
                format!("command-line option \"{word}\" is not allowed through sluice"),
            ));
        };
        let (name, value) = assignment.split_once('=').ok_or_else(|| {
            refuse(
                INSUFFICIENT_PRIVILEGE,
                format!("option \"{assignment}\" has no value"),
            )
        })?;
        let name = name.replace('-', "_").to_ascii_lowercase();
        if !OPTION_SETTINGS.contains(&name.as_str()) {
            return Err(refuse(
                INSUFFICIENT_PRIVILEGE,
                format!("setting \"{name}\" is not allowed in options through sluice"),
            ));
        }
        settings.push((name, value.to_owned()));
    }
    Ok(settings)
}

fn split_options(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            c if c.is_ascii_whitespace() => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

fn escape_option(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\\' || c.is_ascii_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn harmless_timeouts_in_options_pass_and_are_rebuilt_escaped() {
        let s = ClientStartup::from_params(params(&[
            ("user", "agent"),
            (
                "options",
                "-c statement_timeout=5s --lock-timeout=1s -c TimeZone=Europe/Paris",
            ),
        ]))
        .unwrap();
        assert_eq!(
            s.option_settings,
            params(&[
                ("statement_timeout", "5s"),
                ("lock_timeout", "1s"),
                ("timezone", "Europe/Paris")
            ])
        );
        let up = s.upstream_params("agent", "gw", "app", std::time::Duration::ZERO);
        assert!(up.contains(&(
            "options".into(),
            "-c statement_timeout=5s -c lock_timeout=1s -c timezone=Europe/Paris".into()
        )));
    }

    #[test]
    fn role_search_path_and_session_authorization_in_options_are_refused_by_name() {
        for (bad, name) in [
            ("-c role=postgres", "role"),
            ("-csearch_path=evil", "search_path"),
            ("--session_authorization=postgres", "session_authorization"),
            ("-c statement_timeout=1 -c role=x", "role"),
        ] {
            let err =
                ClientStartup::from_params(params(&[("user", "a"), ("options", bad)])).unwrap_err();
            assert_eq!(err.code, "42501");
            assert!(err.message.contains(&format!("\"{name}\"")), "{err:?}");
        }
    }

    #[test]
    fn other_command_line_switches_are_refused() {
        let err =
            ClientStartup::from_params(params(&[("user", "a"), ("options", "-d 5")])).unwrap_err();
        assert!(err.message.contains("-d"), "{err:?}");
    }

    #[test]
    fn escaped_space_stays_inside_the_value() {
        let s = ClientStartup::from_params(params(&[
            ("user", "a"),
            ("options", r"-c DateStyle=ISO,\ MDY"),
        ]))
        .unwrap();
        assert_eq!(s.option_settings, params(&[("datestyle", "ISO, MDY")]));
        let up = s.upstream_params("a", "gw", "app", std::time::Duration::ZERO);
        assert!(up.contains(&("options".into(), r"-c datestyle=ISO,\ MDY".into())));
    }

    #[test]
    fn replication_and_unknown_parameters_are_refused() {
        let err = ClientStartup::from_params(params(&[("user", "a"), ("replication", "database")]))
            .unwrap_err();
        assert!(err.message.contains("replication"));
        let err =
            ClientStartup::from_params(params(&[("user", "a"), ("search_path", "x")])).unwrap_err();
        assert!(err.message.contains("search_path"));
    }

    #[test]
    fn upstream_sees_the_gateway_role_and_the_subject_in_application_name() {
        let s = ClientStartup::from_params(params(&[
            ("user", "agent-7"),
            ("database", "app"),
            ("application_name", "psql"),
            ("client_encoding", "UTF8"),
        ]))
        .unwrap();
        let up = s.upstream_params("agent-7", "sluice_gw", "appdb", std::time::Duration::ZERO);
        assert_eq!(up[0], ("user".into(), "sluice_gw".into()));
        assert_eq!(up[1], ("database".into(), "appdb".into()));
        assert_eq!(
            up[2],
            ("application_name".into(), "sluice:agent-7:psql".into())
        );
        assert!(up.contains(&("client_encoding".into(), "UTF8".into())));
        assert!(up.contains(&("standard_conforming_strings".into(), "on".into())));
    }

    #[test]
    fn only_utf8_is_a_client_encoding_and_the_gateway_sends_its_own() {
        for (name, value) in [
            ("client_encoding", "SJIS"),
            ("client_encoding", "big5"),
            ("options", "-c client_encoding=GBK"),
            ("options", "--client-encoding=LATIN1"),
        ] {
            let err =
                ClientStartup::from_params(params(&[("user", "a"), (name, value)])).unwrap_err();
            assert_eq!(err.code, "42501");
            assert!(err.message.contains("client_encoding"), "{err:?}");
        }
        let s = ClientStartup::from_params(params(&[
            ("user", "a"),
            ("client_encoding", "SQL_ASCII"),
            ("options", "-c client_encoding=utf-8"),
        ]))
        .unwrap();
        let up = s.upstream_params("a", "gw", "app", std::time::Duration::ZERO);
        let encodings: Vec<_> = up.iter().filter(|(k, _)| k == "client_encoding").collect();
        assert_eq!(encodings, [&("client_encoding".into(), "UTF8".into())]);
        assert!(!up.iter().any(|(k, _)| k == "options"));
    }

    #[test]
    fn database_defaults_to_user_name() {
        let s = ClientStartup::from_params(params(&[("user", "agent")])).unwrap();
        assert_eq!(s.database, "agent");
    }
}
