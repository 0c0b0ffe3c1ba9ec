//! Writes that can reach every row of a table are refused: UPDATE and DELETE need a WHERE that
//! looks at the rows, a MERGE UPDATE or DELETE action a condition that limits it (the host's
//! `unfiltered-write`), also when hidden in a CTE, under EXPLAIN ANALYZE, PREPARE or COPY;
//! TRUNCATE is refused.
use sluice_sdk::{Decision, PluginError, Policy, Session, Statement, Verdict};

struct SafeWrites;

impl Policy for SafeWrites {
    fn evaluate(_session: &Session, statement: Statement) -> Result<Verdict, PluginError> {
        let decision = if statement.command == "TruncateStmt" {
            Decision::Deny("TRUNCATE is not allowed".into())
        } else if statement.unfiltered_write {
            Decision::Deny(
                "UPDATE and DELETE need a WHERE clause on the rows they change, and MERGE a condition limiting its UPDATE or DELETE actions".into(),
            )
        } else {
            Decision::Allow
        };
        Ok(Verdict::per_shape(decision))
    }
}

sluice_sdk::export_policy!(SafeWrites);
