//! UPDATE and DELETE need a WHERE clause, also when hidden in a CTE or under EXPLAIN ANALYZE;
//! TRUNCATE is refused.
use sluice_sdk::{Decision, PluginError, Policy, Session, Statement, Verdict};

struct SafeWrites;

impl Policy for SafeWrites {
    fn evaluate(_session: &Session, statement: Statement) -> Result<Verdict, PluginError> {
        let decision = if statement.command == "TruncateStmt" {
            Decision::Deny("TRUNCATE is not allowed".into())
        } else if statement.unfiltered_write {
            Decision::Deny("UPDATE and DELETE need a WHERE clause".into())
        } else {
            Decision::Allow
        };
        Ok(Verdict::per_shape(decision))
    }
}

sluice_sdk::export_policy!(SafeWrites);
