//! Plugin instances of one session. Each session gets its own instance of each plugin version,
//! created on first use (tens of microseconds for a Rust component) and reused for every later
//! statement of that session, so no plugin state crosses from one session to another. A trap,
//! timeout or out-of-memory discards the instance; the next call gets a fresh one.
//!
//! Each instance also remembers the verdicts its plugin declared reusable (`reuse` in the
//! contract): per statement shape, or per text and parameter values. A remembered verdict
//! answers without a call; it lives and dies with the instance, so it never outlives the
//! plugin version or the session that produced it.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::Store;

use super::bindings::v0_1::PolicyPlugin as PolicyBindings;
use super::bindings::v0_1::sluice::plugin::types as wit;
use super::host::PluginHost;
use super::set::{PluginSet, PolicyPlugin};
use super::state::PluginState;

/// Why a plugin call produced no decision. Every variant refuses the statement.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallFailure {
    #[error("plugin timed out after {0:?}")]
    Timeout(Duration),
    #[error("plugin trapped: {0}")]
    Trap(String),
    #[error("plugin could not be instantiated: {0}")]
    Instantiate(String),
    #[error("plugin reported an error: {0}")]
    Reported(String),
}

impl CallFailure {
    /// A label for metrics.
    pub fn class(&self) -> &'static str {
        match self {
            CallFailure::Timeout(_) => "timeout",
            CallFailure::Trap(_) => "trap",
            CallFailure::Instantiate(_) => "instantiate",
            CallFailure::Reported(_) => "reported",
        }
    }
}

/// Verdicts remembered per instance; beyond this many of a kind the memo starts over.
const MEMO_CAPACITY: usize = 4096;

/// What identifies a statement for verdict reuse, shared by every plugin's lookup.
#[derive(Debug)]
pub struct ReuseKey<'a> {
    /// The analyser's shape id, for single DML statements.
    shape: Option<u64>,
    text: &'a str,
    params: &'a [Option<String>],
    /// Whether a verdict may be remembered and reused at all.
    reusable: bool,
    /// Hash of text and parameter values, computed only if a lookup gets that far; a hit is
    /// confirmed against the stored text and values.
    text_hash: OnceLock<u64>,
}

/// Keyed once per process: text hashes are compared within one process only, and a hit is
/// confirmed against the stored text anyway.
static TEXT_HASHER: LazyLock<RandomState> = LazyLock::new(RandomState::new);

impl<'a> ReuseKey<'a> {
    /// The key of a statement (its analyser shape id, text) with these parameter values;
    /// `reusable: false` when facts the parser did not find decide it (nothing is remembered).
    pub fn new(
        shape: Option<u64>,
        text: &'a str,
        params: &'a [Option<String>],
        reusable: bool,
    ) -> ReuseKey<'a> {
        ReuseKey {
            shape,
            text,
            params,
            reusable,
            text_hash: OnceLock::new(),
        }
    }

    fn text_hash(&self) -> u64 {
        *self
            .text_hash
            .get_or_init(|| TEXT_HASHER.hash_one((self.text, self.params)))
    }
}

/// For maps keyed by numbers that are already well spread or not attacker-chosen (shape ids,
/// hashes): a multiply instead of SipHash on the per-statement path.
#[derive(Default)]
struct SpreadHasher(u64);

impl Hasher for SpreadHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type NumberMap<V> = HashMap<u64, V, BuildHasherDefault<SpreadHasher>>;

struct TextVerdict {
    text: String,
    params: Vec<Option<String>>,
    decision: wit::Decision,
}

struct Live {
    store: Store<PluginState>,
    bindings: PolicyBindings,
    by_shape: NumberMap<wit::Decision>,
    by_text: NumberMap<TextVerdict>,
    /// This plugin's call-latency histogram, looked up once per instance rather than per call.
    call_seconds: Option<prometheus_client::metrics::histogram::Histogram>,
    running: Option<prometheus_client::metrics::gauge::Gauge>,
}

impl Live {
    fn remembered(&self, key: &ReuseKey<'_>) -> Option<&wit::Decision> {
        if !key.reusable {
            return None;
        }
        if let Some(decision) = key.shape.and_then(|shape| self.by_shape.get(&shape)) {
            return Some(decision);
        }
        if self.by_text.is_empty() {
            return None;
        }
        self.by_text
            .get(&key.text_hash())
            .filter(|v| v.text == key.text && v.params == key.params)
            .map(|v| &v.decision)
    }

    fn remember(&mut self, key: &ReuseKey<'_>, verdict: &wit::Verdict, statement: &wit::Statement) {
        if !key.reusable {
            return;
        }
        match (verdict.reuse, key.shape) {
            (wit::Reuse::Never, _) => {}
            (wit::Reuse::SameShape, Some(shape)) => {
                if self.by_shape.len() >= MEMO_CAPACITY {
                    self.by_shape.clear();
                }
                self.by_shape.insert(shape, verdict.decision.clone());
            }
            // Same text, or a shape-wide verdict for a statement without a shape id.
            (wit::Reuse::SameText | wit::Reuse::SameShape, _) => {
                if self.by_text.len() >= MEMO_CAPACITY {
                    self.by_text.clear();
                }
                self.by_text.insert(
                    key.text_hash(),
                    TextVerdict {
                        text: statement.text.clone(),
                        params: statement.params.clone(),
                        decision: verdict.decision.clone(),
                    },
                );
            }
        }
    }
}

pub struct SessionPlugins {
    host: Arc<PluginHost>,
    /// By plugin id. A handful of plugins: a scan beats hashing.
    live: Vec<(u64, Live)>,
    /// The plugin set generation `live` was last pruned for.
    generation: u64,
}

impl SessionPlugins {
    pub fn new(host: Arc<PluginHost>) -> SessionPlugins {
        SessionPlugins {
            host,
            live: Vec::new(),
            generation: 0,
        }
    }

    pub fn host(&self) -> &Arc<PluginHost> {
        &self.host
    }

    /// Drops instances of plugin versions that are no longer serving.
    pub fn retain(&mut self, set: &PluginSet) {
        if set.generation == self.generation {
            return;
        }
        self.generation = set.generation;
        self.live
            .retain(|(id, _)| set.policies.iter().any(|p| p.id == *id));
    }

    /// A verdict this plugin's instance declared reusable for the statement, if any.
    pub fn remembered(&self, plugin: &PolicyPlugin, key: &ReuseKey<'_>) -> Option<wit::Decision> {
        let (_, live) = self.live.iter().find(|(id, _)| *id == plugin.id)?;
        live.remembered(key).cloned()
    }

    /// Calls the plugin's `evaluate` in its sandbox and remembers the verdict as far as the
    /// plugin allows.
    pub async fn evaluate(
        &mut self,
        plugin: &PolicyPlugin,
        session: &crate::identity::SessionInfo,
        statement: &wit::Statement,
        catalog: &super::catalog_import::CallCatalog,
        key: &ReuseKey<'_>,
    ) -> Result<wit::Decision, CallFailure> {
        let found = self.live.iter().position(|(id, _)| *id == plugin.id);
        let index = match found {
            Some(index) => index,
            None => {
                let host = self.host.clone();
                let live = instantiate(&host, plugin, session).await?;
                self.live.push((plugin.id, live));
                self.live.len() - 1
            }
        };
        let live = &mut self.live[index].1;
        super::call::arm(&mut live.store, plugin.limits.timeout);
        live.store.data_mut().catalog = Some(catalog.clone());
        let started = Instant::now();
        if let Some(running) = &live.running {
            running.inc();
        }
        let outcome = super::call::bounded(
            plugin.limits.timeout,
            live.bindings
                .sluice_plugin_policy()
                .call_evaluate(&mut live.store, statement),
        )
        .await;
        // The epoch deadline stops wasm code wherever it runs, and `bounded` a call blocked in
        // a host import; a call that still took too long in total (a stalled machine) is
        // refused after the fact.
        let took = started.elapsed();
        live.store.data_mut().catalog = None;
        if let Some(running) = &live.running {
            running.dec();
        }
        let overran = took > plugin.limits.timeout * 2 + Duration::from_millis(5);
        if let Some(histogram) = &live.call_seconds {
            histogram.observe(took.as_secs_f64());
        }
        let failure = match outcome {
            Err(trap) => classify_trap(&trap, plugin.limits.timeout),
            Ok(_) if overran => CallFailure::Timeout(plugin.limits.timeout),
            Ok(Err(reported)) => return Err(CallFailure::Reported(reported_message(reported))),
            Ok(Ok(verdict)) => {
                live.remember(key, &verdict, statement);
                return Ok(verdict.decision);
            }
        };
        // After a trap the instance's state is unknown: never reuse it.
        self.live.swap_remove(index);
        count_failure(&self.host, &plugin.name, &failure);
        Err(failure)
    }
}

/// Counts a failed plugin call in the metrics, by plugin and failure class.
pub(super) fn count_failure(host: &PluginHost, plugin: &str, failure: &CallFailure) {
    if let Some(metrics) = host.metrics() {
        metrics
            .plugin_failures
            .get_or_create(&crate::metrics::PluginFailureLabels {
                plugin: plugin.to_owned(),
                reason: failure.class().to_owned(),
            })
            .inc();
    }
}

/// A fresh instance of `plugin` in a store of its own. (A free function: holding `&self`
/// across the await would require the session's stores to be `Sync`.)
async fn instantiate(
    host: &PluginHost,
    plugin: &PolicyPlugin,
    session: &crate::identity::SessionInfo,
) -> Result<Live, CallFailure> {
    // Instantiation runs the component's start code, and `open` follows: allow both five
    // call budgets.
    let mut store = host.sandbox(plugin, 5);
    let budget = plugin.limits.timeout * 5;
    let bindings = super::call::bounded(budget, plugin.pre.instantiate_async(&mut store))
        .await
        .map_err(|e| CallFailure::Instantiate(format!("{e:#}")))?;
    let opened = super::call::bounded(
        budget,
        bindings
            .sluice_plugin_policy()
            .call_open(&mut store, &super::convert::session(session)),
    )
    .await;
    match opened {
        Ok(Ok(())) => {}
        Ok(Err(reported)) => return Err(CallFailure::Reported(reported_message(reported))),
        Err(trap) => return Err(classify_trap(&trap, plugin.limits.timeout)),
    }
    Ok(Live {
        store,
        bindings,
        by_shape: NumberMap::default(),
        by_text: NumberMap::default(),
        call_seconds: host.metrics().map(|m| m.plugin_calls(&plugin.name)),
        running: host.metrics().map(|m| m.plugin_running(&plugin.name)),
    })
}

pub(super) fn reported_message(error: wit::Error) -> String {
    match error {
        wit::Error::InvalidConfig(m) => format!("invalid config: {m}"),
        wit::Error::Other(m) => m,
    }
}

pub(super) fn classify_trap(error: &wasmtime::Error, timeout: Duration) -> CallFailure {
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => CallFailure::Timeout(timeout),
        Some(trap) => CallFailure::Trap(trap.to_string()),
        None => CallFailure::Trap(format!("{error:#}")),
    }
}
