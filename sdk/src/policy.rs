//! Policy plugins: the [`Policy`] trait, how far a [`Verdict`] may be reused, and the export.

use crate::session::SESSION;
use crate::{Decision, PluginError, Reuse, Session, Statement, Verdict};

impl Verdict {
    /// Reusable for every statement of the same shape in this session: the decision read only
    /// the session, config and analysed fields, not `text`, `params`, time or plugin state.
    pub fn per_shape(decision: Decision) -> Verdict {
        Verdict {
            decision,
            reuse: Reuse::SameShape,
        }
    }

    /// Reusable for the same text with the same parameter values in this session.
    pub fn per_text(decision: Decision) -> Verdict {
        Verdict {
            decision,
            reuse: Reuse::SameText,
        }
    }

    /// Not reusable: the plugin is asked again for every statement.
    pub fn every_time(decision: Decision) -> Verdict {
        Verdict {
            decision,
            reuse: Reuse::Never,
        }
    }
}

/// A policy plugin: decides each statement of the session its instance serves.
pub trait Policy {
    /// Called once per instance with its session, before any statement; an error refuses the
    /// session's statements (check configuration here).
    fn open(_session: &Session) -> Result<(), PluginError> {
        Ok(())
    }

    /// The verdict on one statement of `session`.
    fn evaluate(session: &Session, statement: Statement) -> Result<Verdict, PluginError>;
}

impl<T: Policy> crate::wit::exports::sluice::plugin::policy::Guest for T {
    fn open(session: Session) -> Result<(), PluginError> {
        T::open(&session)?;
        SESSION
            .set(session)
            .map_err(|_| PluginError::Other("open was called twice".into()))
    }

    fn evaluate(statement: Statement) -> Result<Verdict, PluginError> {
        let session = SESSION
            .get()
            .ok_or_else(|| PluginError::Other("evaluate was called before open".into()))?;
        T::evaluate(session, statement)
    }
}

/// Exports a type implementing [`Policy`] as this component's policy.
#[macro_export]
macro_rules! export_policy {
    ($ty:ident) => {
        $crate::wit::export_policy_bindings!($ty with_types_in $crate::wit);
    };
}
