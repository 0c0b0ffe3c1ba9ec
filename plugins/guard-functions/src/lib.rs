//! Refuses functions that reach outside the database or change identity: server file access
//! (pg_read_file and friends), large-object import/export, dblink, set_config of role or
//! session_authorization, and COPY ... PROGRAM. Config: `deny` adds names (comma-separated).
use sluice_sdk::{Decision, PluginError, Policy, Session, Statement};

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
    fn evaluate(_session: Session, statement: Statement) -> Result<Decision, PluginError> {
        if statement.copy_program {
            return Ok(Decision::Deny("COPY ... PROGRAM is not allowed".into()));
        }
        let extra = sluice_sdk::config_list("deny");
        for function in &statement.functions {
            let name = sluice_sdk::bare_function_name(function);
            if DENIED.contains(&name.as_str())
                || extra.iter().any(|e| e.eq_ignore_ascii_case(&name))
            {
                return Ok(Decision::Deny(format!("function {name} is not allowed")));
            }
            // set_config('role', ...) switches identity like SET ROLE does.
            if name == "set_config" {
                let lower = statement.text.to_ascii_lowercase();
                if ["'role'", "'session_authorization'", "\"role\""]
                    .iter()
                    .any(|p| lower.contains(p))
                    || !statement.params.is_empty()
                {
                    return Ok(Decision::Deny(
                        "set_config of role or session_authorization is not allowed".into(),
                    ));
                }
            }
        }
        Ok(Decision::Allow)
    }
}

sluice_sdk::export_policy!(GuardFunctions);
