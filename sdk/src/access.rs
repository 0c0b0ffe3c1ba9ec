//! Access plugins: the [`Access`] trait and its export.

use crate::{AccessDecision, AccessRequest, PluginError};

/// An access plugin: decides requests for access at the token exchange.
pub trait Access {
    /// What to do with `request`. Called once per request on a fresh instance: nothing kept in
    /// the plugin survives to the next request.
    fn decide(request: AccessRequest) -> Result<AccessDecision, PluginError>;
}

impl<T: Access> crate::access_wit::exports::sluice::plugin::access::Guest for T {
    fn decide(request: AccessRequest) -> Result<AccessDecision, PluginError> {
        T::decide(request)
    }
}

/// Exports a type implementing [`Access`] as this component's access decider.
#[macro_export]
macro_rules! export_access {
    ($ty:ident) => {
        $crate::access_wit::export_access_bindings!($ty with_types_in $crate::access_wit);
    };
}
