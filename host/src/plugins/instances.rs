//! Plugin instances of one session. Each session gets its own instance of each plugin version,
//! created on first use (tens of microseconds for a Rust component) and reused for every later
//! statement of that session, so no plugin state crosses from one session to another. A trap,
//! timeout or out-of-memory discards the instance; the next call gets a fresh one.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::Store;

use super::bindings::v0_1::PolicyPlugin as PolicyBindings;
use super::bindings::v0_1::sluice::plugin::types as wit;
use super::{PluginHost, PluginState, PolicyPlugin};

/// Why a plugin call produced no decision. Every variant refuses the statement.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallFailure {
    #[error("plugin timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("plugin trapped: {0}")]
    Trap(String),
    #[error("plugin could not be instantiated: {0}")]
    Instantiate(String),
    #[error("plugin reported an error: {0}")]
    Reported(String),
}

struct Live {
    store: Store<PluginState>,
    bindings: PolicyBindings,
}

pub struct SessionPlugins {
    host: Arc<PluginHost>,
    live: HashMap<u64, Live>,
}

impl SessionPlugins {
    pub fn new(host: Arc<PluginHost>) -> SessionPlugins {
        SessionPlugins {
            host,
            live: HashMap::new(),
        }
    }

    pub fn host(&self) -> &Arc<PluginHost> {
        &self.host
    }

    /// Drops instances of plugin versions that are no longer serving.
    pub fn retain(&mut self, serving: &[Arc<PolicyPlugin>]) {
        if self
            .live
            .keys()
            .any(|id| !serving.iter().any(|p| p.id == *id))
        {
            self.live
                .retain(|id, _| serving.iter().any(|p| p.id == *id));
        }
    }

    /// Calls the plugin's `evaluate` in its sandbox.
    pub async fn evaluate(
        &mut self,
        plugin: &PolicyPlugin,
        session: &wit::Session,
        statement: &wit::Statement,
    ) -> Result<wit::Decision, CallFailure> {
        if !self.live.contains_key(&plugin.id) {
            let host = self.host.clone();
            let live = instantiate(&host, plugin).await?;
            self.live.insert(plugin.id, live);
        }
        let Some(live) = self.live.get_mut(&plugin.id) else {
            return Err(CallFailure::Instantiate("instance vanished".into()));
        };
        live.store
            .set_epoch_deadline(super::deadline_ticks(plugin.limits.timeout));
        let call =
            live.bindings
                .sluice_plugin_policy()
                .call_evaluate(&mut live.store, session, statement);
        // The epoch deadline stops wasm code; the wall-clock guard also covers time spent
        // outside it (host imports, instantiation of lazily linked parts).
        let guard = plugin.limits.timeout * 2 + std::time::Duration::from_millis(5);
        let outcome = match tokio::time::timeout(guard, call).await {
            Err(_) => Err(CallFailure::Timeout(plugin.limits.timeout)),
            Ok(Err(trap)) => Err(classify_trap(&trap, plugin)),
            Ok(Ok(Err(reported))) => {
                return Err(CallFailure::Reported(match reported {
                    wit::Error::InvalidConfig(m) => format!("invalid config: {m}"),
                    wit::Error::Other(m) => m,
                }));
            }
            Ok(Ok(Ok(decision))) => return Ok(decision),
        };
        // After a trap the instance's state is unknown: never reuse it.
        self.live.remove(&plugin.id);
        outcome
    }
}

/// A fresh instance of `plugin` in a store of its own. (A free function: holding `&self`
/// across the await would require the session's stores to be `Sync`.)
async fn instantiate(host: &PluginHost, plugin: &PolicyPlugin) -> Result<Live, CallFailure> {
    {
        let state = PluginState::new(
            plugin.name.clone(),
            plugin.config.clone(),
            plugin.limits.memory_bytes,
        );
        let mut store = Store::new(host.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        // Instantiation runs the component's start code: allow it five call budgets.
        store.set_epoch_deadline(super::deadline_ticks(plugin.limits.timeout) * 5);
        let bindings = plugin
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| CallFailure::Instantiate(format!("{e:#}")))?;
        Ok(Live { store, bindings })
    }
}

fn classify_trap(error: &wasmtime::Error, plugin: &PolicyPlugin) -> CallFailure {
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => CallFailure::Timeout(plugin.limits.timeout),
        Some(trap) => CallFailure::Trap(trap.to_string()),
        None => CallFailure::Trap(format!("{error:#}")),
    }
}
