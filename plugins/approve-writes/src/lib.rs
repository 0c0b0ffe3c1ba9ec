//! Statements that write need a human's approval. Config: `exempt_groups` (comma-separated).
use sluice_sdk::{Decision, PluginError, Policy, Session, Statement, Verdict};

struct ApproveWrites;

impl Policy for ApproveWrites {
    fn evaluate(session: &Session, statement: Statement) -> Result<Verdict, PluginError> {
        // Reads the session, config and analysed fields only.
        Ok(Verdict::per_shape(decide(session, &statement)))
    }
}

fn decide(session: &Session, statement: &Statement) -> Decision {
    if !statement.writes
        || sluice_sdk::in_any_group(session, &sluice_sdk::config_list("exempt_groups"))
    {
        return Decision::Allow;
    }
    let tables: Vec<String> = statement
        .tables_written
        .iter()
        .map(|t| t.to_string())
        .collect();
    Decision::RequireApproval(if tables.is_empty() {
        "this statement writes".into()
    } else {
        format!("this statement writes to {}", tables.join(", "))
    })
}

sluice_sdk::export_policy!(ApproveWrites);
