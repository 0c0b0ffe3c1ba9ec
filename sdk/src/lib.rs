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
//! An access plugin implements the `sluice:plugin/access-plugin` world (contract 0.1.2): it
//! decides requests for tokens at the gateway's token exchange. [`Access`], exported with
//! [`export_access!`], answers each [`AccessRequest`] (who asks, vouched for by which issuer,
//! with which claims; for which database, how long, why) with an [`AccessDecision`]: issue a
//! [`Grant`], require approval, deny, or pass:
//!
//! ```no_run
//! use sluice_sdk::{Access, AccessDecision, AccessRequest, Grant, PluginError};
//!
//! struct MainBranchReadsOnly;
//!
//! impl Access for MainBranchReadsOnly {
//!     fn decide(request: AccessRequest) -> Result<AccessDecision, PluginError> {
//!         let on_main = request.subject.claims.iter().any(|(k, v)| k == "ref" && v == "refs/heads/main");
//!         Ok(if on_main {
//!             AccessDecision::Issue(Grant { lifetime_ms: Some(600_000), groups: None, read_only: true })
//!         } else {
//!             AccessDecision::Deny("only the main branch may read".into())
//!         })
//!     }
//! }
//!
//! sluice_sdk::export_access!(MainBranchReadsOnly);
//! ```
//!
//! A masking plugin implements the `sluice:plugin/reusable-masking-plugin` world (0.1.3; the
//! `masking-plugin` world and a [`Masker::plan_reuse`] answer): [`Masker`], exported with
//! [`export_masker!`]. For each result set it plans a [`Mask`] per [`Column`]; the
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
            "sluice:plugin/types@0.1.3": crate::wit::sluice::plugin::types,
            "sluice:plugin/host@0.1.3": crate::wit::sluice::plugin::host,
            "sluice:plugin/catalog@0.1.3": crate::wit::sluice::plugin::catalog,
        },
    });
}

#[doc(hidden)]
pub mod access_wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "access-plugin",
        pub_export_macro: true,
        export_macro_name: "export_access_bindings",
        default_bindings_module: "sluice_sdk::access_wit",
        with: {
            "sluice:plugin/types@0.1.3": crate::wit::sluice::plugin::types,
            "sluice:plugin/host@0.1.3": crate::wit::sluice::plugin::host,
            "sluice:plugin/catalog@0.1.3": crate::wit::sluice::plugin::catalog,
        },
    });
}

#[doc(hidden)]
pub mod masking_wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "reusable-masking-plugin",
        pub_export_macro: true,
        export_macro_name: "export_masking_bindings",
        default_bindings_module: "sluice_sdk::masking_wit",
        with: {
            "sluice:plugin/types@0.1.3": crate::wit::sluice::plugin::types,
            "sluice:plugin/host@0.1.3": crate::wit::sluice::plugin::host,
            "sluice:plugin/catalog@0.1.3": crate::wit::sluice::plugin::catalog,
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

mod access;
mod approval;
mod host;
mod masking;
mod policy;
mod session;
mod types;

pub use access::Access;
pub use access_wit::exports::sluice::plugin::access::{
    AccessDecision, AccessRequest, Approval as AccessApproval, Grant, Identity,
};
pub use approval::Router;
pub use host::{bare_function_name, config, config_list, function_info, in_any_group, log};
pub use masking::Masker;
pub use masking_wit::exports::sluice::plugin::masking_reuse::ReuseScope;
pub use policy::Policy;
