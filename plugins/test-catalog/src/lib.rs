//! A test plugin that reads the contract's `catalog` import (0.1.1): it refuses every
//! statement that calls a function, naming what the catalog declares about each one, so a
//! test sees exactly what a plugin sees.

use sluice_sdk::{Decision, PluginError, Policy, Session, Statement, Verdict};

struct ShowCatalog;

impl Policy for ShowCatalog {
    fn evaluate(_session: &Session, statement: Statement) -> Result<Verdict, PluginError> {
        if statement.functions.is_empty() {
            return Ok(Verdict::every_time(Decision::Allow));
        }
        let seen: Vec<String> = statement
            .functions
            .iter()
            .map(|name| {
                let what = match sluice_sdk::function_info(name) {
                    None => "unknown",
                    Some(info) if !info.user_defined => "built-in",
                    Some(info) if info.volatile => "user-defined volatile",
                    Some(_) => "user-defined",
                };
                format!("{name}: {what}")
            })
            .collect();
        // Asking about a function the statement does not call gets no answer.
        let stray = match sluice_sdk::function_info("not_called_here") {
            None => "",
            Some(_) => " (and answered for a function not called)",
        };
        Ok(Verdict::every_time(Decision::Deny(format!(
            "catalog says {}{stray}",
            seen.join(", ")
        ))))
    }
}

sluice_sdk::export_policy!(ShowCatalog);
