//! Write Sluice policy and approval plugins in Rust.
//!
//! A policy plugin is a WebAssembly component implementing the `sluice:plugin/policy-plugin`
//! world (see `wit/`). With this crate it is a `cdylib` with one type implementing
//! [`Policy`], exported with [`export_policy!`], built with
//! `cargo build --release --target wasm32-wasip2`:
//!
//! ```no_run
//! use sluice_sdk::{Decision, Policy, Session, Statement, StatementKind, PluginError, Verdict};
//!
//! struct NoDdl;
//!
//! impl Policy for NoDdl {
//!     fn evaluate(_session: &Session, statement: Statement) -> Result<Verdict, PluginError> {
//!         let decision = match statement.kind {
//!             StatementKind::Ddl => Decision::Deny("schema changes are not allowed".into()),
//!             _ => Decision::Allow,
//!         };
//!         // Only `kind` was read: every statement of this shape gets the same answer.
//!         Ok(Verdict::per_shape(decision))
//!     }
//! }
//!
//! sluice_sdk::export_policy!(NoDdl);
//! ```
//!
//! Drop the resulting `.wasm` into the gateway's plugin directory, with an optional
//! `<name>.toml` manifest (`priority`, `enabled`, `[config]`, `[limits]`); the gateway loads it
//! without a restart. Each session gets its own instance: global state in a plugin lives as
//! long as that session's instance and is never seen by another session. The session is
//! handed to the instance once (`open` in the contract) and to [`Policy::evaluate`] by
//! reference.
//!
//! A [`Verdict`] says how far the gateway may reuse the decision in this session without
//! calling the plugin again ([`Reuse`]): per shape when the decision reads only analysed fields
//! (kind, tables, functions, flags) and the session, per text when it reads `text` or
//! `params`, never when it reads the clock or keeps state between calls. Reuse is what keeps a
//! pipeline of plugins out of the per-statement cost; over-stating it lets statements through
//! on a stale decision.
//!
//! An approval plugin implements the `sluice:plugin/approval-plugin` world: it implements
//! [`Router`] and is exported with [`export_router!`]. It is called once per held statement,
//! on a fresh instance, and answers with a [`Routing`]: ask people (which groups, how many,
//! how long, what the notification says), approve or deny without a human, or pass to the
//! next approval plugin (after the last, the gateway's `[approvals]` default route):
//!
//! ```no_run
//! use sluice_sdk::{ApprovalRequest, ApprovalRoute, PluginError, Router, Routing};
//!
//! struct TwoDbas;
//!
//! impl Router for TwoDbas {
//!     fn route(request: ApprovalRequest) -> Result<Routing, PluginError> {
//!         if !request.statements.iter().any(|s| s.writes) {
//!             return Ok(Routing::Pass);
//!         }
//!         Ok(Routing::Ask(ApprovalRoute {
//!             approver_groups: vec!["dba".into()],
//!             approvals_needed: 2,
//!             timeout_ms: None,
//!             notification: Some(format!("{} wants to write", request.session.subject)),
//!         }))
//!     }
//! }
//!
//! sluice_sdk::export_router!(TwoDbas);
//! ```
//!
//! A masking plugin implements the `sluice:plugin/masking-plugin` world: [`Masker`], exported
//! with [`export_masker!`]. For each result set it plans a [`Mask`] per [`Column`]; the
//! gateway applies `keep`, `null`, `redact`, `hash` and `partial` itself, and sends the
//! values of `custom` columns back to [`Masker::transform`] in batches. A column's `source`
//! is the table column it carries unchanged; `derived_from` lists the table columns an
//! expression, aggregate or whole-row reference may have put into it — a plan must cover
//! those too, or their values leave through `upper(email)`:
//!
//! ```no_run
//! use sluice_sdk::{Column, Mask, Masker, PluginError, Session, Statement};
//!
//! struct HideEmails;
//!
//! impl Masker for HideEmails {
//!     fn plan(_: &Session, _: Statement, columns: Vec<Column>) -> Result<Vec<Mask>, PluginError> {
//!         Ok(columns
//!             .iter()
//!             .map(|c| {
//!                 let email = |s: &sluice_sdk::ColumnSource| s.column == "email";
//!                 if c.source.iter().any(email) {
//!                     Mask::Hash
//!                 } else if c.derived_from.iter().any(email) {
//!                     Mask::Redact("[email]".into())
//!                 } else {
//!                     Mask::Keep
//!                 }
//!             })
//!             .collect())
//!     }
//! }
//!
//! sluice_sdk::export_masker!(HideEmails);
//! ```
#![deny(missing_docs)]

#[doc(hidden)]
pub mod wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "policy-plugin",
        pub_export_macro: true,
        export_macro_name: "export_policy_bindings",
        default_bindings_module: "sluice_sdk::wit",
    });
}

#[doc(hidden)]
pub mod approval_wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "approval-plugin",
        pub_export_macro: true,
        export_macro_name: "export_approval_bindings",
        default_bindings_module: "sluice_sdk::approval_wit",
        with: {
            "sluice:plugin/types@0.1.1": crate::wit::sluice::plugin::types,
            "sluice:plugin/host@0.1.1": crate::wit::sluice::plugin::host,
            "sluice:plugin/catalog@0.1.1": crate::wit::sluice::plugin::catalog,
        },
    });
}

#[doc(hidden)]
pub mod masking_wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "masking-plugin",
        pub_export_macro: true,
        export_macro_name: "export_masking_bindings",
        default_bindings_module: "sluice_sdk::masking_wit",
        with: {
            "sluice:plugin/types@0.1.1": crate::wit::sluice::plugin::types,
            "sluice:plugin/host@0.1.1": crate::wit::sluice::plugin::host,
            "sluice:plugin/catalog@0.1.1": crate::wit::sluice::plugin::catalog,
        },
    });
}

mod pattern;

pub use pattern::TablePattern;
pub use wit::sluice::plugin::catalog::FunctionInfo;
pub use wit::sluice::plugin::host::{self as host_api, LogLevel};
pub use wit::sluice::plugin::types::{
    ApprovalRequest, ApprovalRoute, Column, ColumnSource, Decision, Error as PluginError, Mask,
    PartialMask, Reuse, Routing, Session, Statement, StatementKind, TableRef, ValueFormat, Verdict,
};

/// What the database's catalog declares about `name`, one of the `functions` of the statement
/// being evaluated (or of an approval request's statements): user-defined or built-in, and
/// for a user-defined one whether it is VOLATILE (it may write or change settings, whatever
/// the statement looks like). `None` for a name the statement does not call, and in masking
/// calls. Needs a gateway serving contract 0.1.1.
pub fn function_info(name: &str) -> Option<FunctionInfo> {
    wit::sluice::plugin::catalog::describe_function(name)
}

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

/// The session of this instance, set once by `open`.
static SESSION: std::sync::OnceLock<Session> = std::sync::OnceLock::new();

impl<T: Policy> wit::exports::sluice::plugin::policy::Guest for T {
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

/// An approval plugin: routes each statement a policy held for approval.
pub trait Router {
    /// Where `request` goes. Called once per request on a fresh instance: nothing kept in the
    /// plugin survives to the next request.
    fn route(request: ApprovalRequest) -> Result<Routing, PluginError>;
}

impl<T: Router> approval_wit::exports::sluice::plugin::approval::Guest for T {
    fn route(request: ApprovalRequest) -> Result<Routing, PluginError> {
        T::route(request)
    }
}

/// Exports a type implementing [`Router`] as this component's approval router.
#[macro_export]
macro_rules! export_router {
    ($ty:ident) => {
        $crate::approval_wit::export_approval_bindings!($ty with_types_in $crate::approval_wit);
    };
}

/// A masking plugin: plans how each result set of its session is masked.
pub trait Masker {
    /// Called once per instance with its session; `false` when this plugin masks nothing in
    /// it (the gateway then never calls it again for the session). An error withholds every
    /// result value of the session.
    fn open(_session: &Session) -> Result<bool, PluginError> {
        Ok(true)
    }

    /// A mask for each of `columns`, in order.
    fn plan(
        session: &Session,
        statement: Statement,
        columns: Vec<Column>,
    ) -> Result<Vec<Mask>, PluginError>;

    /// The values of a column planned as [`Mask::Custom`], transformed; as many as given.
    fn transform(
        _session: &Session,
        _column: Column,
        _values: Vec<Option<String>>,
    ) -> Result<Vec<Option<String>>, PluginError> {
        Err(PluginError::Other(
            "planned a custom mask without implementing transform".into(),
        ))
    }
}

impl<T: Masker> masking_wit::exports::sluice::plugin::masking::Guest for T {
    fn open(session: Session) -> Result<bool, PluginError> {
        let active = T::open(&session)?;
        SESSION
            .set(session)
            .map_err(|_| PluginError::Other("open was called twice".into()))?;
        Ok(active)
    }

    fn plan(statement: Statement, columns: Vec<Column>) -> Result<Vec<Mask>, PluginError> {
        T::plan(opened()?, statement, columns)
    }

    fn transform(
        column: Column,
        values: Vec<Option<String>>,
    ) -> Result<Vec<Option<String>>, PluginError> {
        T::transform(opened()?, column, values)
    }
}

fn opened() -> Result<&'static Session, PluginError> {
    SESSION
        .get()
        .ok_or_else(|| PluginError::Other("called before open".into()))
}

/// Exports a type implementing [`Masker`] as this component's masking plugin.
#[macro_export]
macro_rules! export_masker {
    ($ty:ident) => {
        $crate::masking_wit::export_masking_bindings!($ty with_types_in $crate::masking_wit);
    };
}

impl ColumnSource {
    /// Whether this is `table_pattern`'s column `column` (both as a [`TablePattern`] would
    /// match, `*` allowed for the column).
    pub fn is(&self, table: &TablePattern, column: &str) -> bool {
        (column == "*" || column.eq_ignore_ascii_case(&self.column))
            && table.matches(
                &TableRef {
                    schema: Some(self.schema.clone()),
                    name: self.table.clone(),
                },
                &[],
            )
    }
}

/// A value from the `[config]` table of the plugin's manifest.
pub fn config(key: &str) -> Option<String> {
    host_api::config(key)
}

/// A comma-separated config value as a list (empty entries dropped, whitespace trimmed).
pub fn config_list(key: &str) -> Vec<String> {
    config(key)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Writes to the gateway's log, tagged with the plugin's name.
pub fn log(level: LogLevel, message: &str) {
    host_api::log(level, message)
}

/// Whether the session's token carries any of `groups`.
pub fn in_any_group(session: &Session, groups: &[String]) -> bool {
    session.groups.iter().any(|g| groups.contains(g))
}

/// The function's name without its schema, lower case (`pg_catalog.PG_READ_FILE` →
/// `pg_read_file`).
pub fn bare_function_name(name: &str) -> String {
    name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase()
}

impl std::fmt::Display for TableRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}
