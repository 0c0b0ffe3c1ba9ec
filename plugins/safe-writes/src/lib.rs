//! UPDATE and DELETE need a WHERE clause (also inside CTEs and EXPLAIN ANALYZE, which the host
//! reports as the statement's kind or as a hidden write); TRUNCATE is refused.
use sluice_sdk::{Decision, PluginError, Policy, Session, Statement, StatementKind};

struct SafeWrites;

impl Policy for SafeWrites {
    fn evaluate(_session: Session, statement: Statement) -> Result<Decision, PluginError> {
        if statement.command == "TruncateStmt" {
            return Ok(Decision::Deny("TRUNCATE is not allowed".into()));
        }
        Ok(match statement.kind {
            StatementKind::Update | StatementKind::Delete if !statement.has_where => {
                Decision::Deny("UPDATE and DELETE need a WHERE clause".into())
            }
            _ => Decision::Allow,
        })
    }
}

sluice_sdk::export_policy!(SafeWrites);
