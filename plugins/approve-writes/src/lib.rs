//! Statements that write need a human's approval. Config: `exempt_groups` (comma-separated).
use sluice_sdk::{Decision, PluginError, Policy, Session, Statement};

struct ApproveWrites;

impl Policy for ApproveWrites {
    fn evaluate(session: Session, statement: Statement) -> Result<Decision, PluginError> {
        if !statement.writes
            || sluice_sdk::in_any_group(&session, &sluice_sdk::config_list("exempt_groups"))
        {
            return Ok(Decision::Allow);
        }
        let tables: Vec<String> = statement
            .tables_written
            .iter()
            .map(|t| t.to_string())
            .collect();
        Ok(Decision::RequireApproval(if tables.is_empty() {
            "this statement writes".into()
        } else {
            format!("this statement writes to {}", tables.join(", "))
        }))
    }
}

sluice_sdk::export_policy!(ApproveWrites);
