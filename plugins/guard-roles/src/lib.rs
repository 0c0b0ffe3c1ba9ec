//! Refuses switching identity inside a session: SET ROLE, SET SESSION AUTHORIZATION, RESET ROLE,
//! RESET SESSION AUTHORIZATION, RESET ALL and SET LOCAL variants.
use sluice_sdk::{Decision, PluginError, Policy, Session, Statement, StatementKind, Verdict};

struct GuardRoles;

impl Policy for GuardRoles {
    fn evaluate(_session: &Session, statement: Statement) -> Result<Verdict, PluginError> {
        let parameter = statement.parameter.as_deref().unwrap_or("");
        let identity = matches!(parameter, "role" | "session_authorization");
        let decision = match statement.kind {
            StatementKind::Set | StatementKind::Reset if identity => {
                Decision::Deny(format!("changing {parameter} is not allowed"))
            }
            // RESET ALL would also reset the role.
            StatementKind::Reset if parameter.is_empty() => {
                Decision::Deny("RESET ALL is not allowed".into())
            }
            _ => Decision::Allow,
        };
        Ok(Verdict::per_shape(decision))
    }
}

sluice_sdk::export_policy!(GuardRoles);
