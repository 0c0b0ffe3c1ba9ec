//! Routing a request before anyone is asked: the approval plugins, in priority order, until
//! one answers something other than `pass`; after the last, the `[approvals]` default route.
//! A plugin that fails, or routes a request to nobody, refuses the held statement: a request
//! no approver can see would only wait out its timeout, and a failing router must never fall
//! through to a laxer route.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use crate::plugins::{PluginHost, PluginSet, wit};

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing {
    /// No approval plugin routed it: the `[approvals]` default route.
    Default,
    /// To people, as an approval plugin said.
    Ask(PluginRoute),
    /// Decided by an approval plugin without a human.
    Decided {
        by: String,
        approve: bool,
        reason: String,
    },
}

/// An approval plugin's route to people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginRoute {
    pub by: String,
    pub approver_groups: Vec<String>,
    pub approvals_needed: u32,
    /// `None`: the `[approvals]` timeout.
    pub timeout: Option<Duration>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("approval plugin \"{plugin}\" failed: {failure}")]
pub struct RoutingFailure {
    pub plugin: Arc<str>,
    pub failure: String,
}

/// Asks the serving approval plugins where `request` goes.
pub async fn route(
    host: &PluginHost,
    set: &PluginSet,
    request: &wit::ApprovalRequest,
    catalog: &crate::plugins::CallCatalog,
) -> Result<Routing, RoutingFailure> {
    for plugin in &set.approvals {
        let failed = |failure: String| RoutingFailure {
            plugin: plugin.name.clone(),
            failure,
        };
        let span = tracing::debug_span!("approval_plugin", sluice.plugin = %plugin.name);
        let routing = crate::plugins::route(host, plugin, request, catalog)
            .instrument(span)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let by = plugin.name.to_string();
        return Ok(match routing {
            wit::Routing::Pass => continue,
            wit::Routing::AutoApprove(reason) => Routing::Decided {
                by,
                approve: true,
                reason,
            },
            wit::Routing::AutoDeny(reason) => Routing::Decided {
                by,
                approve: false,
                reason,
            },
            wit::Routing::Ask(route) => {
                let approver_groups: Vec<String> = route
                    .approver_groups
                    .into_iter()
                    .map(|g| g.trim().to_owned())
                    .filter(|g| !g.is_empty())
                    .collect();
                if approver_groups.is_empty() {
                    return Err(failed("it routed the request to no approver group".into()));
                }
                Routing::Ask(PluginRoute {
                    by,
                    approver_groups,
                    approvals_needed: route.approvals_needed.max(1),
                    timeout: route.timeout_ms.map(Duration::from_millis),
                    note: route.notification.as_deref().map(crate::display::note),
                })
            }
        });
    }
    Ok(Routing::Default)
}
