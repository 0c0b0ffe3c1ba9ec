//! Calls into approval plugins: once per held statement, on a fresh instance (`once.rs`).

use super::bindings::v0_1::sluice::plugin::types as wit;
use super::host::PluginHost;
use super::instances::CallFailure;
use super::set::ApprovalPlugin;

/// Asks `plugin` where `request` goes, within the plugin's time and memory limits.
pub async fn route(
    host: &PluginHost,
    plugin: &ApprovalPlugin,
    request: &wit::ApprovalRequest,
    catalog: &super::catalog_import::CallCatalog,
) -> Result<wit::Routing, CallFailure> {
    super::once::call_once(
        host,
        plugin,
        Some(catalog.clone()),
        async |pre, store| pre.instantiate_async(store).await,
        async |bindings, store| {
            bindings
                .sluice_plugin_approval()
                .call_route(store, request)
                .await
        },
    )
    .await
}
