//! A call on a fresh instance in a store of its own, for plugins that run once per request far
//! off the per-statement path (approval and access plugins): nothing a plugin keeps survives
//! to the next request, and a trap costs nothing to clean up.

use std::time::{Duration, Instant};

use super::bindings::v0_1::sluice::plugin::types::Error as Reported;
use super::host::PluginHost;
use super::instances::{CallFailure, classify_trap, reported_message};
use super::set::Plugin;
use super::state::PluginState;

type Store = wasmtime::Store<PluginState>;

/// Instantiates `plugin` and makes one call, within the plugin's time and memory limits:
/// instantiation runs the component's start code, so it and the call get two budgets.
pub(super) async fn call_once<Pre, Bindings, T>(
    host: &PluginHost,
    plugin: &Plugin<Pre>,
    catalog: Option<super::catalog_import::CallCatalog>,
    instantiate: impl AsyncFnOnce(&Pre, &mut Store) -> wasmtime::Result<Bindings>,
    call: impl AsyncFnOnce(Bindings, &mut Store) -> wasmtime::Result<Result<T, Reported>>,
) -> Result<T, CallFailure> {
    let mut store = host.sandbox(plugin, 2);
    store.data_mut().catalog = catalog;
    let started = Instant::now();
    let budget = plugin.limits.timeout * 2;
    let bindings = super::call::bounded(budget, instantiate(&plugin.pre, &mut store))
        .await
        .map_err(|e| match e.downcast_ref::<wasmtime::Trap>() {
            Some(_) => classify_trap(&e, plugin.limits.timeout),
            None => CallFailure::Instantiate(format!("{e:#}")),
        })?;
    let outcome = super::call::bounded(budget, call(bindings, &mut store)).await;
    let overran = started.elapsed() > plugin.limits.timeout * 4 + Duration::from_millis(5);
    match outcome {
        Err(trap) => Err(classify_trap(&trap, plugin.limits.timeout)),
        Ok(_) if overran => Err(CallFailure::Timeout(plugin.limits.timeout)),
        Ok(Err(reported)) => Err(CallFailure::Reported(reported_message(reported))),
        Ok(Ok(answer)) => Ok(answer),
    }
}
