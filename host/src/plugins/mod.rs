//! WebAssembly component plugins: the wasmtime engine, loading `<name>.wasm` (+ `<name>.toml`)
//! from the plugin directory, telling plugin kinds apart by the interface a component exports,
//! compiled-artifact caching by content hash, hot reload by atomic swap, per-session sandboxed
//! policy and masking instances and one-call approval instances.
//!
//! Reload is load → compile → validate → swap. A file that fails any step never unloads the
//! version that was serving: the previous one keeps serving and the failure is reported.

mod approval;
mod bindings;
mod bounds;
mod catalog_import;
pub mod convert;
mod directory;
mod instances;
mod loader;
mod manifest;
mod masking;
mod state;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config as EngineConfig, Engine};

pub use approval::route;
pub use bindings::v0_1::sluice::plugin::types as wit;
pub use bounds::CompileBounds;
pub use catalog_import::CallCatalog;
pub use directory::valid_name;
pub use instances::{CallFailure, ReuseKey, SessionPlugins};
pub use manifest::Manifest;
pub use masking::SessionMaskers;
pub use state::PluginState;

/// Arms `store` for a call that may take `budget`: at every epoch tick the call either yields
/// to the runtime (so the worker thread's other sessions go on while a slow plugin runs) or,
/// past the deadline, is interrupted wherever its wasm code is.
pub(crate) fn arm(store: &mut wasmtime::Store<PluginState>, budget: Duration) {
    store.data_mut().deadline = std::time::Instant::now() + budget;
    store.set_epoch_deadline(1);
}

/// `call` bounded in wall time by `budget` (with one tick of slack and as much again for the
/// host's side): the epoch deadline cannot stop a plugin blocked in a host call (a WASI sleep
/// or poll), so the call is dropped there and reported as an interrupt. The caller discards
/// the instance, as after any trap.
pub(crate) async fn bounded<T>(
    budget: Duration,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    match tokio::time::timeout(budget * 2 + EPOCH_TICK, call).await {
        Ok(outcome) => outcome,
        Err(_) => Err(wasmtime::Error::new(wasmtime::Trap::Interrupt)),
    }
}
pub use watch::{WatchHandle, watch};

use bindings::v0_1::PolicyPluginPre;
use bindings::v0_1::approval::ApprovalPluginPre;
use bindings::v0_1::masking::MaskingPluginPre;

/// Epoch tick: a call's deadline is checked, and a long call yields, once per tick (a 20 ms
/// timeout stops within 20–25 ms). A finer tick costs an idle gateway a thread wakeup every
/// millisecond.
const EPOCH_TICK: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot set up the plugin engine: {0}")]
    Engine(String),
    #[error("cannot read plugin directory {dir}: {source}")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin directory refused: {0}")]
    Untrusted(String),
}

/// Sandbox defaults, overridable per plugin in its manifest.
#[derive(Debug, Clone)]
pub struct Limits {
    pub timeout: Duration,
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_millis(20),
            memory_bytes: 64 << 20,
        }
    }
}

/// A plugin of one kind, ready to instantiate.
pub struct Plugin<Pre> {
    /// Unique per load: a new component or a new manifest gives a new id, so sessions build
    /// new instances instead of reusing ones made with the old config.
    pub id: u64,
    pub name: Arc<str>,
    /// SHA-256 of the component file, hex.
    pub hash: Arc<str>,
    pub priority: i32,
    pub config: Arc<BTreeMap<String, String>>,
    pub limits: Limits,
    /// A masking plugin whose masked columns may not be used in conditions (manifest).
    pub strict: bool,
    pre: Pre,
}

/// Decides statements (`policy-plugin` world).
pub type PolicyPlugin = Plugin<PolicyPluginPre<PluginState>>;
/// Routes approval requests (`approval-plugin` world).
pub type ApprovalPlugin = Plugin<ApprovalPluginPre<PluginState>>;
/// Masks result columns (`masking-plugin` world).
pub type MaskingPlugin = Plugin<MaskingPluginPre<PluginState>>;

impl<Pre> std::fmt::Debug for Plugin<Pre> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("hash", &self.hash)
            .field("priority", &self.priority)
            .finish_non_exhaustive()
    }
}

impl Plugin<()> {
    fn with<Pre>(self, pre: Pre) -> Plugin<Pre> {
        Plugin {
            id: self.id,
            name: self.name,
            hash: self.hash,
            priority: self.priority,
            config: self.config,
            limits: self.limits,
            strict: self.strict,
            pre,
        }
    }
}

impl<Pre> Plugin<Pre> {
    /// Whether this load can keep serving for a file with this content and manifest.
    fn unchanged(&self, hash: &str, manifest: &Manifest, limits: &Limits) -> bool {
        *self.hash == *hash
            && self.priority == manifest.priority
            && *self.config == manifest.config
            && self.strict == manifest.strict
            && self.limits.timeout == limits.timeout
            && self.limits.memory_bytes == limits.memory_bytes
    }
}

/// What a plugin does, from the interface its component exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    Policy,
    Approval,
    Masking,
}

/// One loaded file, of whichever kind.
#[derive(Debug, Clone)]
enum Loaded {
    Policy(Arc<PolicyPlugin>),
    Approval(Arc<ApprovalPlugin>),
    Masking(Arc<MaskingPlugin>),
}

/// Runs `$body` with `$p` bound to the plugin of whichever kind `$loaded` holds.
macro_rules! each_kind {
    ($loaded:expr, $p:ident => $body:expr) => {
        match $loaded {
            Loaded::Policy($p) => $body,
            Loaded::Approval($p) => $body,
            Loaded::Masking($p) => $body,
        }
    };
}

impl Loaded {
    fn kind(&self) -> PluginKind {
        match self {
            Loaded::Policy(_) => PluginKind::Policy,
            Loaded::Approval(_) => PluginKind::Approval,
            Loaded::Masking(_) => PluginKind::Masking,
        }
    }

    fn id(&self) -> u64 {
        each_kind!(self, p => p.id)
    }

    fn hash(&self) -> &str {
        each_kind!(self, p => &p.hash)
    }

    fn priority(&self) -> i32 {
        each_kind!(self, p => p.priority)
    }

    fn unchanged(&self, hash: &str, manifest: &Manifest, limits: &Limits) -> bool {
        each_kind!(self, p => p.unchanged(hash, manifest, limits))
    }
}

/// The plugins serving right now, each kind in the order it runs.
#[derive(Debug, Default)]
pub struct PluginSet {
    pub policies: Vec<Arc<PolicyPlugin>>,
    pub approvals: Vec<Arc<ApprovalPlugin>>,
    pub maskers: Vec<Arc<MaskingPlugin>>,
    pub generation: u64,
    /// Required plugins not serving: while any is, every statement is refused.
    pub missing: Vec<Arc<str>>,
}

impl PluginSet {
    /// Whether statements must be judged: a policy serves, or a required plugin is missing
    /// (and every statement is refused).
    pub fn guards(&self) -> bool {
        !self.policies.is_empty() || !self.missing.is_empty()
    }

    fn loaded(&self) -> impl Iterator<Item = (&str, Loaded)> {
        let policies = self
            .policies
            .iter()
            .map(|p| (&*p.name, Loaded::Policy(p.clone())));
        let approvals = self
            .approvals
            .iter()
            .map(|p| (&*p.name, Loaded::Approval(p.clone())));
        let maskers = self
            .maskers
            .iter()
            .map(|p| (&*p.name, Loaded::Masking(p.clone())));
        policies.chain(approvals).chain(maskers)
    }
}

/// One file's state after the last (re)load, for `sluice plugins list` and the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginStatus {
    pub name: String,
    pub file: PathBuf,
    /// Hash of the version serving, if any.
    pub serving: Option<String>,
    pub kind: Option<PluginKind>,
    pub priority: Option<i32>,
    /// Why the file on disk is not the version serving.
    pub error: Option<String>,
}

/// Engine, linker, the serving set and the load report.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<PluginState>,
    dir: Option<PathBuf>,
    cache_dir: PathBuf,
    defaults: Limits,
    current: ArcSwap<PluginSet>,
    status: std::sync::Mutex<Vec<PluginStatus>>,
    generation: AtomicU64,
    /// Plugins that must be serving: `[plugins] required`, and every name whose manifest said
    /// `required` since start.
    required: std::sync::Mutex<std::collections::BTreeSet<String>>,
    bounds: std::sync::Mutex<CompileBounds>,
    stop_ticker: Arc<AtomicBool>,
    /// Where loads, reloads and load failures are recorded.
    audit: std::sync::OnceLock<Arc<crate::audit::Audit>>,
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl PluginHost {
    /// Sets up the engine; loads nothing yet (see [`PluginHost::reload`]).
    pub fn new(
        dir: Option<PathBuf>,
        cache_dir: PathBuf,
        defaults: Limits,
    ) -> Result<Arc<PluginHost>, PluginError> {
        let mut config = EngineConfig::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| PluginError::Engine(e.to_string()))?;
        // Every world imports the same `host` interface: linking it once serves all kinds.
        bindings::v0_1::PolicyPlugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| PluginError::Engine(e.to_string()))?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("sluice-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| PluginError::Engine(e.to_string()))?;
        }
        // Only the gateway's user may write compiled artifacts, whatever the umask.
        let made = std::fs::create_dir_all(&cache_dir).and_then(|()| {
            std::fs::set_permissions(
                &cache_dir,
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )
        });
        if let Err(e) = made {
            tracing::warn!(dir = %cache_dir.display(), error = %e, "plugin cache disabled");
        }
        Ok(Arc::new(PluginHost {
            engine,
            linker,
            dir,
            cache_dir,
            defaults,
            current: ArcSwap::from_pointee(PluginSet::default()),
            status: std::sync::Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            required: std::sync::Mutex::new(std::collections::BTreeSet::new()),
            bounds: std::sync::Mutex::new(CompileBounds::default()),
            stop_ticker,
            audit: std::sync::OnceLock::new(),
            metrics: std::sync::OnceLock::new(),
        }))
    }

    /// Plugins that must be serving from the next reload on (`[plugins] required`).
    pub fn require(&self, names: impl IntoIterator<Item = String>) {
        self.required
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(names);
    }

    /// How big a component may be compiled, from the next reload on.
    pub fn bound_compilation(&self, bounds: CompileBounds) {
        *self.bounds.lock().unwrap_or_else(|e| e.into_inner()) = bounds;
    }

    /// Records plugin loads, reloads and failures in `audit` from now on.
    pub fn set_audit(&self, audit: Arc<crate::audit::Audit>) {
        let _ = self.audit.set(audit);
    }

    /// Counts reloads, load failures and plugin calls in `metrics` from now on.
    pub fn set_metrics(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    pub(crate) fn metrics(&self) -> Option<&crate::metrics::Metrics> {
        self.metrics.get().map(|m| &**m)
    }

    fn audit(&self, event: crate::audit::Event) {
        if let Some(audit) = self.audit.get() {
            audit.record(event);
        }
    }

    /// A store of its own for one instance of `plugin`: its memory cap, no ambient
    /// capabilities, and an epoch deadline of `budgets` call timeouts.
    pub(crate) fn sandbox<Pre>(
        &self,
        plugin: &Plugin<Pre>,
        budgets: u64,
    ) -> wasmtime::Store<PluginState> {
        let state = PluginState::new(
            plugin.name.clone(),
            plugin.config.clone(),
            plugin.limits.memory_bytes,
        );
        let mut store = wasmtime::Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|context| {
            Ok(if std::time::Instant::now() >= context.data().deadline {
                wasmtime::UpdateDeadline::Interrupt
            } else {
                wasmtime::UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
            })
        });
        arm(&mut store, plugin.limits.timeout * budgets as u32);
        store
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The set serving now. Callers keep the `Arc` for the whole statement, so a reload never
    /// changes the plugins under a statement in flight.
    pub fn current(&self) -> Arc<PluginSet> {
        self.current.load_full()
    }

    /// The serving set's generation; cheaper than [`PluginHost::current`].
    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// Whether statements must be judged (a policy serves, or a required plugin is missing);
    /// cheaper than [`PluginHost::current`] (no reference count touched), for the
    /// per-message check.
    pub fn has_policies(&self) -> bool {
        self.current.load().guards()
    }

    /// Whether any masking plugin is serving (as cheap as [`PluginHost::has_policies`]).
    pub fn has_maskers(&self) -> bool {
        !self.current.load().maskers.is_empty()
    }

    pub fn status(&self) -> Vec<PluginStatus> {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Rescans the directory, compiles what changed, and swaps the new set in. Blocking
    /// (compilation); call it off the request path.
    pub fn reload(&self) -> Result<(), PluginError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let resolved_dir = directory::check_dir(dir).map_err(PluginError::Untrusted)?;
        let entries = std::fs::read_dir(dir).map_err(|source| PluginError::Dir {
            dir: dir.clone(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file())
            .collect();
        files.sort();
        let previous = self.current();
        let by_name: HashMap<&str, Loaded> = previous.loaded().collect();
        let mut serving = Vec::new();
        let mut status = Vec::new();
        let mut required = self
            .required
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for file in files {
            let name = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !valid_name(&name) {
                tracing::error!(file = %crate::display::line(&file.display().to_string()), "plugin file name refused: letters, digits, '-' and '_' only");
                status.push(PluginStatus {
                    name: crate::display::line(&name).into_owned(),
                    file,
                    serving: None,
                    kind: None,
                    priority: None,
                    error: Some(
                        "the name may hold only letters, digits, '-' and '_' (up to 64)".into(),
                    ),
                });
                continue;
            }
            let trusted = directory::check_file(&resolved_dir, &file).and_then(|()| {
                let manifest = file.with_extension("toml");
                match manifest.symlink_metadata() {
                    Ok(_) => directory::check_file(&resolved_dir, &manifest),
                    Err(_) => Ok(()),
                }
            });
            // Remembered even if the plugin then fails to load (and so is missing).
            if trusted.is_ok() && Manifest::for_component(&file).is_ok_and(|m| m.required) {
                required.insert(name.clone());
            }
            let loaded = trusted.and_then(|()| self.load(&file, &name, by_name.get(name.as_str())));
            match loaded {
                Ok(Some(plugin)) => {
                    let reused = by_name
                        .get(name.as_str())
                        .is_some_and(|p| p.id() == plugin.id());
                    if !reused {
                        self.audit(crate::audit::Event::PluginLoaded {
                            plugin: name.clone(),
                            kind: format!("{:?}", plugin.kind()).to_lowercase(),
                            hash: plugin.hash().to_owned(),
                            priority: plugin.priority(),
                        });
                    }
                    status.push(PluginStatus {
                        name: name.clone(),
                        file: file.clone(),
                        serving: Some(plugin.hash().to_owned()),
                        kind: Some(plugin.kind()),
                        priority: Some(plugin.priority()),
                        error: None,
                    });
                    serving.push(plugin);
                }
                Ok(None) => status.push(PluginStatus {
                    name,
                    file,
                    serving: None,
                    kind: None,
                    priority: None,
                    error: Some("disabled by its manifest".into()),
                }),
                Err(error) => {
                    // The working version, if there was one, keeps serving.
                    let kept = by_name.get(name.as_str()).cloned();
                    tracing::error!(plugin = %name, %error, kept = kept.is_some(), "plugin failed to load");
                    if let Some(metrics) = self.metrics() {
                        metrics
                            .plugin_load_failures
                            .get_or_create(&crate::metrics::PluginLabels {
                                plugin: name.clone(),
                            })
                            .inc();
                    }
                    self.audit(crate::audit::Event::PluginLoadFailed {
                        plugin: name.clone(),
                        error: error.clone(),
                        kept: kept.as_ref().map(|p| p.hash().to_owned()),
                    });
                    status.push(PluginStatus {
                        name,
                        file,
                        serving: kept.as_ref().map(|p| p.hash().to_owned()),
                        kind: kept.as_ref().map(Loaded::kind),
                        priority: kept.as_ref().map(Loaded::priority),
                        error: Some(error),
                    });
                    serving.extend(kept);
                }
            }
        }
        *self.required.lock().unwrap_or_else(|e| e.into_inner()) = required.clone();
        let missing: Vec<Arc<str>> = required
            .iter()
            .filter(|name| {
                !status
                    .iter()
                    .any(|s| s.name == **name && s.serving.is_some())
            })
            .map(|name| Arc::from(name.as_str()))
            .collect();
        for name in &missing {
            tracing::error!(plugin = %name, "required plugin is not serving; every statement is refused until it is");
            if !status.iter().any(|s| s.name == **name) {
                status.push(PluginStatus {
                    name: name.to_string(),
                    file: dir.join(format!("{name}.wasm")),
                    serving: None,
                    kind: None,
                    priority: None,
                    error: Some("required, and there is no such file".into()),
                });
            }
        }
        for (name, gone) in &by_name {
            if !status
                .iter()
                .any(|s| s.name == *name && s.serving.is_some())
            {
                self.audit(crate::audit::Event::PluginUnloaded {
                    plugin: (*name).to_owned(),
                    hash: gone.hash().to_owned(),
                });
            }
        }
        let (mut policies, mut approvals, mut maskers) = (Vec::new(), Vec::new(), Vec::new());
        for plugin in serving {
            match plugin {
                Loaded::Policy(p) => policies.push(p),
                Loaded::Approval(p) => approvals.push(p),
                Loaded::Masking(p) => maskers.push(p),
            }
        }
        policies.sort_by(|a, b| a.priority.cmp(&b.priority).then(a.name.cmp(&b.name)));
        approvals.sort_by(|a, b| a.priority.cmp(&b.priority).then(a.name.cmp(&b.name)));
        maskers.sort_by(|a, b| a.priority.cmp(&b.priority).then(a.name.cmp(&b.name)));
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(metrics) = self.metrics() {
            metrics.plugin_reloads.inc();
        }
        let summary: Vec<String> = policies
            .iter()
            .map(|p| format!("{}@{}", p.name, &p.hash[..12]))
            .chain(
                approvals
                    .iter()
                    .map(|p| format!("{}@{} (approval)", p.name, &p.hash[..12])),
            )
            .chain(
                maskers
                    .iter()
                    .map(|p| format!("{}@{} (masking)", p.name, &p.hash[..12])),
            )
            .collect();
        self.current.store(Arc::new(PluginSet {
            policies,
            approvals,
            maskers,
            generation,
            missing,
        }));
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = status;
        tracing::info!(generation, plugins = ?summary, "plugin set swapped in");
        Ok(())
    }
}
