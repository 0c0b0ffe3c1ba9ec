//! Refuses schema changes: CREATE, ALTER, DROP, TRUNCATE, GRANT, COMMENT, SELECT INTO ...
//! Config: `allow_groups` (comma-separated) may change the schema.
use sluice_sdk::{Decision, PluginError, Policy, Session, Statement, StatementKind, Verdict};

struct NoDdl;

impl Policy for NoDdl {
    fn evaluate(session: &Session, statement: Statement) -> Result<Verdict, PluginError> {
        let decision = if statement.kind != StatementKind::Ddl
            || sluice_sdk::in_any_group(session, &sluice_sdk::config_list("allow_groups"))
        {
            Decision::Allow
        } else {
            Decision::Deny("schema changes (DDL) are not allowed".into())
        };
        Ok(Verdict::per_shape(decision))
    }
}

sluice_sdk::export_policy!(NoDdl);
