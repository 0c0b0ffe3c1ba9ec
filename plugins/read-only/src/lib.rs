//! Members of the configured groups may only read: anything that writes (including writes
//! hidden in reads: data-modifying CTEs, EXPLAIN ANALYZE of a write, SELECT INTO, COPY
//! PROGRAM), DO blocks, CALL and COPY FROM are refused.
//! Config: `groups` (comma-separated; `*` means everyone).
use sluice_sdk::{Decision, PluginError, Policy, Session, Statement, StatementKind};

struct ReadOnly;

impl Policy for ReadOnly {
    fn evaluate(session: Session, statement: Statement) -> Result<Decision, PluginError> {
        let groups = sluice_sdk::config_list("groups");
        let applies =
            groups.iter().any(|g| g == "*") || sluice_sdk::in_any_group(&session, &groups);
        if !applies {
            return Ok(Decision::Allow);
        }
        let writes = statement.writes
            || matches!(
                statement.kind,
                StatementKind::CopyIn | StatementKind::DoBlock | StatementKind::Call
            );
        Ok(if writes {
            Decision::Deny(format!("{} is read-only here", session.subject))
        } else {
            Decision::Allow
        })
    }
}

sluice_sdk::export_policy!(ReadOnly);
