//! Approval plugins: the [`Router`] trait and its export.

use crate::{ApprovalRequest, PluginError, Routing};

/// An approval plugin: routes each statement a policy held for approval.
pub trait Router {
    /// Where `request` goes. Called once per request on a fresh instance: nothing kept in the
    /// plugin survives to the next request.
    fn route(request: ApprovalRequest) -> Result<Routing, PluginError>;
}

impl<T: Router> crate::approval_wit::exports::sluice::plugin::approval::Guest for T {
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
