//! What each plugin instance's store holds: its name and config for the host imports, its
//! memory limit, and a WASI context that grants nothing (no files, network, environment, args).

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::v0_1::sluice::plugin::catalog::{self, FunctionInfo};
use super::bindings::v0_1::sluice::plugin::host::{self, LogLevel};
use super::bindings::v0_1::sluice::plugin::types;
use super::catalog_import::CallCatalog;

pub struct PluginState {
    pub name: Arc<str>,
    pub config: Arc<BTreeMap<String, String>>,
    pub limits: StoreLimits,
    /// When the call in progress must stop (checked at every epoch tick).
    pub deadline: std::time::Instant,
    /// What the `catalog` import answers during the call in progress (`None`: nothing).
    pub catalog: Option<CallCatalog>,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl PluginState {
    pub fn new(name: Arc<str>, config: Arc<BTreeMap<String, String>>, memory_bytes: usize) -> Self {
        PluginState {
            name,
            config,
            limits: wasmtime::StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                .instances(16)
                .tables(16)
                .memories(4)
                .trap_on_grow_failure(true)
                .build(),
            deadline: std::time::Instant::now(),
            catalog: None,
            // Empty: stdio goes nowhere, no preopened directories, no sockets, no variables.
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        }
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for PluginState {}

impl host::Host for PluginState {
    fn log(&mut self, level: LogLevel, message: String) {
        let plugin = &*self.name;
        // Bounded: a plugin must not flood the gateway's log with one call.
        // Escaped: a newline must not forge a line of the gateway's log.
        let message: String = message.chars().take(2000).collect();
        let message = crate::display::line(&message);
        match level {
            LogLevel::Trace => tracing::trace!(sluice.plugin = plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(sluice.plugin = plugin, "{message}"),
            LogLevel::Info => tracing::info!(sluice.plugin = plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(sluice.plugin = plugin, "{message}"),
            LogLevel::Error => tracing::error!(sluice.plugin = plugin, "{message}"),
        }
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }

    fn now_ms(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// The contract's `catalog` import: answered from the facts the call was handed.
impl catalog::Host for PluginState {
    fn describe_function(&mut self, name: String) -> Option<FunctionInfo> {
        self.catalog.as_ref()?.info(&name)
    }
}
