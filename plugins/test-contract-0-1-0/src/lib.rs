//! A policy plugin built against the first published contract, `wit/0.1.0`, without the SDK
//! (which follows the newest): the gateway must keep serving components built before 0.1.1.
//! It refuses schema changes with a reason from its manifest, through the 0.1.0 host imports.

wit_bindgen::generate!({
    path: "../../wit/0.1.0",
    world: "policy-plugin",
});

use exports::sluice::plugin::policy::Guest;
use sluice::plugin::host;
use sluice::plugin::types::{Decision, Error, Reuse, Session, Statement, StatementKind, Verdict};

struct Old;

impl Guest for Old {
    fn open(_session: Session) -> Result<(), Error> {
        Ok(())
    }

    fn evaluate(statement: Statement) -> Result<Verdict, Error> {
        let decision = if statement.kind == StatementKind::Ddl {
            let reason = host::config("reason").unwrap_or_else(|| "no DDL (0.1.0)".into());
            Decision::Deny(reason)
        } else {
            Decision::Allow
        };
        Ok(Verdict {
            decision,
            reuse: Reuse::SameShape,
        })
    }
}

export!(Old);
