//! What the gateway offers a plugin: its manifest's config, its log, the catalog's facts
//! about functions, and small helpers over the session and names.

use crate::{FunctionInfo, LogLevel, Session, host_api, wit};

/// What the database's catalog declares about `name`, one of the `functions` of the statement
/// being evaluated (or of an approval request's statements): user-defined or built-in, and
/// for a user-defined one whether it is VOLATILE (it may write or change settings, whatever
/// the statement looks like). `None` for a name the statement does not call, and in masking
/// calls. Needs a gateway serving contract 0.1.1.
pub fn function_info(name: &str) -> Option<FunctionInfo> {
    wit::sluice::plugin::catalog::describe_function(name)
}

/// A value from the `[config]` table of the plugin's manifest.
pub fn config(key: &str) -> Option<String> {
    host_api::config(key)
}

/// A comma-separated config value as a list (empty entries dropped, whitespace trimmed).
pub fn config_list(key: &str) -> Vec<String> {
    config(key)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Writes to the gateway's log, tagged with the plugin's name.
pub fn log(level: LogLevel, message: &str) {
    host_api::log(level, message)
}

/// Whether the session's token carries any of `groups`.
pub fn in_any_group(session: &Session, groups: &[String]) -> bool {
    session.groups.iter().any(|g| groups.contains(g))
}

/// The function's name without its schema, lower case (`pg_catalog.PG_READ_FILE` →
/// `pg_read_file`).
pub fn bare_function_name(name: &str) -> String {
    name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase()
}
