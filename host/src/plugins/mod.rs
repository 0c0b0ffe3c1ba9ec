//! WebAssembly component plugins: the wasmtime engine, loading `<name>.wasm` (+ `<name>.toml`)
//! from the plugin directory, telling plugin kinds apart by the interface a component exports,
//! compiled-artifact caching by content hash, hot reload by atomic swap, per-session sandboxed
//! policy and masking instances and one-call approval and access instances.
//!
//! Reload is load → compile → validate → swap. A file that fails any step never unloads the
//! version that was serving: the previous one keeps serving and the failure is reported.

pub mod access;
mod approval;
mod bindings;
mod bounds;
mod call;
mod catalog_import;
pub mod convert;
mod directory;
mod host;
mod instances;
mod loader;
mod manifest;
mod masking;
mod masking_pre;
mod once;
mod plans;
mod set;
mod state;
mod watch;

pub use approval::route;
pub use bindings::v0_1::sluice::plugin::types as wit;
pub use bounds::CompileBounds;
pub use catalog_import::CallCatalog;
pub use convert::LazyStatement;
pub use directory::valid_name;
pub use host::{PluginError, PluginHost};
pub use instances::{CallFailure, ReuseKey, SessionPlugins};
pub use manifest::Manifest;
pub use masking::SessionMaskers;
pub use set::{
    AccessPlugin, ApprovalPlugin, Limits, MaskingPlugin, Plugin, PluginKind, PluginSet,
    PluginStatus, PolicyPlugin,
};
pub use state::PluginState;
pub use watch::{WatchHandle, watch};
