//! Refuses schema changes: CREATE, ALTER, DROP, TRUNCATE, GRANT, COMMENT, SELECT INTO ...
//! Config: `allow_groups` (comma-separated) may change the schema.
use sluice_sdk::{Decision, PluginError, Policy, Session, Statement, StatementKind};

struct NoDdl;

impl Policy for NoDdl {
    fn evaluate(session: Session, statement: Statement) -> Result<Decision, PluginError> {
        if statement.kind != StatementKind::Ddl
            || sluice_sdk::in_any_group(&session, &sluice_sdk::config_list("allow_groups"))
        {
            return Ok(Decision::Allow);
        }
        Ok(Decision::Deny(
            "schema changes (DDL) are not allowed".into(),
        ))
    }
}

sluice_sdk::export_policy!(NoDdl);
