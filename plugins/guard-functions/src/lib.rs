//! Refuses functions that reach outside the database or change identity: server file access
//! (pg_read_file and friends), large-object import/export, dblink, set_config of role or
//! session_authorization, and COPY ... PROGRAM. Config: `deny` adds names (comma-separated).
use sluice_sdk::{Decision, PluginError, Policy, Session, Statement, Verdict};

const DENIED: &[&str] = &[
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "pg_ls_logdir",
    "pg_ls_waldir",
    "pg_ls_tmpdir",
    "pg_ls_archive_statusdir",
    "lo_import",
    "lo_export",
    "lo_from_bytea",
    "dblink",
    "dblink_exec",
    "dblink_connect",
    "dblink_connect_u",
    "dblink_send_query",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
];

struct GuardFunctions;

impl Policy for GuardFunctions {
    fn evaluate(_session: &Session, statement: Statement) -> Result<Verdict, PluginError> {
        if statement.copy_program {
            return Ok(Verdict::per_shape(Decision::Deny(
                "COPY ... PROGRAM is not allowed".into(),
            )));
        }
        let extra = sluice_sdk::config_list("deny");
        let mut read_text = false;
        for function in &statement.functions {
            let name = sluice_sdk::bare_function_name(function);
            if DENIED.contains(&name.as_str())
                || extra.iter().any(|e| e.eq_ignore_ascii_case(&name))
            {
                return Ok(Verdict::per_shape(Decision::Deny(format!(
                    "function {name} is not allowed"
                ))));
            }
            // set_config('role', ...) switches identity like SET ROLE does. Only calls whose
            // setting name is a plain literal naming something else pass.
            if name == "set_config" {
                read_text = true;
                if !set_config_calls_are_harmless(&statement.text) {
                    return Ok(Verdict::per_text(Decision::Deny(
                        "set_config is allowed only with a literal setting name other than role or session_authorization".into(),
                    )));
                }
            }
        }
        // The setting name is a constant, which a shape ignores: a decision that read the text
        // holds for that text only.
        Ok(if read_text {
            Verdict::per_text(Decision::Allow)
        } else {
            Verdict::per_shape(Decision::Allow)
        })
    }
}

/// Every `set_config(` in `sql` takes a plain `'name'` literal first, and none names role or
/// session_authorization. Anything the check cannot read (expressions, parameters, E'' or
/// dollar quoting, comments in between) counts as harmful.
fn set_config_calls_are_harmless(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$';
    let mut from = 0;
    while let Some(at) = lower[from..].find("set_config").map(|i| from + i) {
        from = at + "set_config".len();
        let before = lower[..at].chars().next_back();
        let rest = &lower[from..];
        // Part of a longer name (my_set_config, set_config_x): not this function.
        if before.is_some_and(ident) || rest.chars().next().is_some_and(ident) {
            continue;
        }
        let rest = rest.strip_prefix('"').unwrap_or(rest);
        let Some(args) = rest.trim_start().strip_prefix('(') else {
            return false;
        };
        let Some(literal) = args.trim_start().strip_prefix('\'') else {
            return false;
        };
        let Some(end) = literal.find('\'') else {
            return false;
        };
        let (setting, after) = (&literal[..end], &literal[end + 1..]);
        if !after.trim_start().starts_with(',')
            || matches!(setting.trim(), "role" | "session_authorization")
        {
            return false;
        }
    }
    true
}

sluice_sdk::export_policy!(GuardFunctions);
