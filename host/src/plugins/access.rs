//! Calls into access plugins: once per request for access, on a fresh instance
//! (`once.rs`).

use super::bindings::v0_1::access::exports::sluice::plugin::access as wit;
use super::host::PluginHost;
use super::instances::CallFailure;
use super::set::AccessPlugin;

pub use wit::{AccessDecision, AccessRequest, Approval, Grant, Identity};

/// Asks `plugin` what to do with `request`, within the plugin's time and memory limits.
pub async fn decide(
    host: &PluginHost,
    plugin: &AccessPlugin,
    request: &AccessRequest,
) -> Result<AccessDecision, CallFailure> {
    super::once::call_once(
        host,
        plugin,
        None,
        async |pre, store| pre.instantiate_async(store).await,
        async |bindings, store| {
            bindings
                .sluice_plugin_access()
                .call_decide(store, request)
                .await
        },
    )
    .await
}
