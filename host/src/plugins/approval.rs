//! Calls into approval plugins. They run once per held statement, far off the per-statement
//! path, so each call gets a fresh instance in a store of its own: nothing a plugin keeps
//! survives from one request to the next, and a trap costs nothing to clean up.

use std::time::{Duration, Instant};

use super::bindings::v0_1::sluice::plugin::types as wit;
use super::host::PluginHost;
use super::instances::CallFailure;
use super::instances::{classify_trap, reported_message};
use super::set::ApprovalPlugin;

/// Asks `plugin` where `request` goes, within the plugin's time and memory limits.
pub async fn route(
    host: &PluginHost,
    plugin: &ApprovalPlugin,
    request: &wit::ApprovalRequest,
    catalog: &super::catalog_import::CallCatalog,
) -> Result<wit::Routing, CallFailure> {
    // Instantiation runs the component's start code: allow it and the call two budgets.
    let mut store = host.sandbox(plugin, 2);
    store.data_mut().catalog = Some(catalog.clone());
    let started = Instant::now();
    let budget = plugin.limits.timeout * 2;
    let bindings = super::call::bounded(budget, plugin.pre.instantiate_async(&mut store))
        .await
        .map_err(|e| match e.downcast_ref::<wasmtime::Trap>() {
            Some(_) => classify_trap(&e, plugin.limits.timeout),
            None => CallFailure::Instantiate(format!("{e:#}")),
        })?;
    let outcome = super::call::bounded(
        budget,
        bindings
            .sluice_plugin_approval()
            .call_route(&mut store, request),
    )
    .await;
    let overran = started.elapsed() > plugin.limits.timeout * 4 + Duration::from_millis(5);
    match outcome {
        Err(trap) => Err(classify_trap(&trap, plugin.limits.timeout)),
        Ok(_) if overran => Err(CallFailure::Timeout(plugin.limits.timeout)),
        Ok(Err(reported)) => Err(CallFailure::Reported(reported_message(reported))),
        Ok(Ok(routing)) => Ok(routing),
    }
}
