//! Refuses changing the settings that decide who the session acts as and what its statements
//! mean, in every way a statement can change one: `SET` (`LOCAL`, `SESSION`), `RESET`,
//! `RESET ALL`, `set_config(...)`, a function's or procedure's `SET` clause, `ALTER ROLE|DATABASE
//! ... SET`, `ALTER SYSTEM` (the host reports each as the statement's `parameter`, `*` when it
//! changes several or one it cannot name).
//!
//! DO blocks are refused too (their bodies could change any setting unseen), and `DISCARD ALL`
//! and `RESET ALL` (they reset the guarded settings).
//!
//! Config: `settings` (comma-separated) replaces the guarded list, which by default is `role`,
//! `session_authorization` (identity), `search_path` (which objects a name means),
//! `standard_conforming_strings` and `backslash_quote` (how text is read).
use sluice_sdk::{Decision, PluginError, Policy, Session, Statement, StatementKind, Verdict};

const DEFAULT_SETTINGS: &[&str] = &[
    "role",
    "session_authorization",
    "search_path",
    "standard_conforming_strings",
    "backslash_quote",
];

struct GuardRoles;

impl Policy for GuardRoles {
    fn evaluate(_session: &Session, statement: Statement) -> Result<Verdict, PluginError> {
        let configured = sluice_sdk::config_list("settings");
        let guarded: Vec<String> = if configured.is_empty() {
            DEFAULT_SETTINGS.iter().map(|s| (*s).to_owned()).collect()
        } else {
            configured.iter().map(|s| s.to_ascii_lowercase()).collect()
        };
        Ok(Verdict::per_shape(decide(&statement, &guarded)))
    }
}

fn decide(statement: &Statement, guarded: &[String]) -> Decision {
    match statement.kind {
        StatementKind::Show => return Decision::Allow,
        // Its body is opaque to the gateway and could change any of them.
        StatementKind::DoBlock => {
            return Decision::Deny(
                "DO blocks are not allowed: they could change guarded settings unseen".into(),
            );
        }
        _ => {}
    }
    match statement.parameter.as_deref() {
        // RESET ALL resets every guarded setting too.
        None if statement.kind == StatementKind::Reset => {
            Decision::Deny("RESET ALL is not allowed".into())
        }
        None => Decision::Allow,
        Some("*") => Decision::Deny(
            "changing settings the gateway cannot name one by one is not allowed".into(),
        ),
        Some(parameter) if guarded.iter().any(|g| g == parameter) => {
            Decision::Deny(format!("changing {parameter} is not allowed"))
        }
        Some(_) => Decision::Allow,
    }
}

sluice_sdk::export_policy!(GuardRoles);
