//! Members of the configured groups may only read: anything that writes (including writes
//! hidden in reads: data-modifying CTEs, EXPLAIN ANALYZE of a write, SELECT INTO, COPY
//! PROGRAM), DO blocks, CALL and COPY FROM are refused.
//! Config: `groups` (comma-separated; `*` means everyone).
use sluice_sdk::{Decision, PluginError, Policy, Session, Statement, StatementKind, Verdict};

struct ReadOnly;

impl Policy for ReadOnly {
    fn evaluate(session: &Session, statement: Statement) -> Result<Verdict, PluginError> {
        Ok(Verdict::per_shape(decide(session, &statement)))
    }
}

fn decide(session: &Session, statement: &Statement) -> Decision {
    let groups = sluice_sdk::config_list("groups");
    let applies = groups.iter().any(|g| g == "*") || sluice_sdk::in_any_group(session, &groups);
    let writes = statement.writes
        || matches!(
            statement.kind,
            StatementKind::CopyIn | StatementKind::DoBlock | StatementKind::Call
        );
    if applies && writes {
        Decision::Deny(format!("{} is read-only here", session.subject))
    } else {
        Decision::Allow
    }
}

sluice_sdk::export_policy!(ReadOnly);
