//! Calls into access plugins. Like approval plugins they run once per request, far off the
//! per-statement path, each call on a fresh instance in a store of its own.

use std::time::{Duration, Instant};

use super::bindings::v0_1::access::exports::sluice::plugin::access as wit;
use super::host::PluginHost;
use super::instances::CallFailure;
use super::instances::{classify_trap, reported_message};
use super::set::AccessPlugin;

pub use wit::{AccessDecision, AccessRequest, Approval, Grant, Identity};

/// Asks `plugin` what to do with `request`, within the plugin's time and memory limits.
pub async fn decide(
    host: &PluginHost,
    plugin: &AccessPlugin,
    request: &AccessRequest,
) -> Result<AccessDecision, CallFailure> {
    // Instantiation runs the component's start code: allow it and the call two budgets.
    let mut store = host.sandbox(plugin, 2);
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
            .sluice_plugin_access()
            .call_decide(&mut store, request),
    )
    .await;
    let overran = started.elapsed() > plugin.limits.timeout * 4 + Duration::from_millis(5);
    match outcome {
        Err(trap) => Err(classify_trap(&trap, plugin.limits.timeout)),
        Ok(_) if overran => Err(CallFailure::Timeout(plugin.limits.timeout)),
        Ok(Err(reported)) => Err(CallFailure::Reported(reported_message(reported))),
        Ok(Ok(decision)) => Ok(decision),
    }
}
