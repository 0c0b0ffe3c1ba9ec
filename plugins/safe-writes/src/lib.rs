//! UPDATE and DELETE need a WHERE clause, also when hidden in a CTE or under EXPLAIN ANALYZE;
//! TRUNCATE is refused.
use sluice_sdk::{Decision, PluginError, Policy, Session, Statement};

struct SafeWrites;

impl Policy for SafeWrites {
    fn evaluate(_session: Session, statement: Statement) -> Result<Decision, PluginError> {
        if statement.command == "TruncateStmt" {
            return Ok(Decision::Deny("TRUNCATE is not allowed".into()));
        }
        Ok(if statement.unfiltered_write {
            Decision::Deny("UPDATE and DELETE need a WHERE clause".into())
        } else {
            Decision::Allow
        })
    }
}

sluice_sdk::export_policy!(SafeWrites);
