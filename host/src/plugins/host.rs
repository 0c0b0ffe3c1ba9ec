//! The plugin host: the wasmtime engine and linker, the serving plugin set swapped in whole
//! at each reload, the status of every file, and the sandbox each call runs in.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use wasmtime::component::Linker;
use wasmtime::{Config as EngineConfig, Engine};

use super::bindings;
use super::bounds::CompileBounds;
use super::call::{EPOCH_TICK, arm};
use super::directory::{self, valid_name};
use super::manifest::Manifest;
use super::set::{Limits, Loaded, Plugin, PluginSet, PluginStatus};
use super::state::PluginState;

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

/// Engine, linker, the serving set and the load report.
pub struct PluginHost {
    pub(super) engine: Engine,
    pub(super) linker: Linker<PluginState>,
    pub(super) dir: Option<PathBuf>,
    pub(super) cache_dir: PathBuf,
    pub(super) defaults: Limits,
    pub(super) current: ArcSwap<PluginSet>,
    pub(super) status: std::sync::Mutex<Vec<PluginStatus>>,
    pub(super) generation: AtomicU64,
    /// Plugins that must be serving: `[plugins] required`, and every name whose manifest said
    /// `required` since start.
    pub(super) required: std::sync::Mutex<std::collections::BTreeSet<String>>,
    pub(super) bounds: std::sync::Mutex<CompileBounds>,
    pub(super) stop_ticker: Arc<AtomicBool>,
    /// Where loads, reloads and load failures are recorded.
    pub(super) audit: std::sync::OnceLock<Arc<crate::audit::Audit>>,
    pub(super) metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
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

    pub(super) fn audit(&self, event: crate::audit::Event) {
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
        let (mut policies, mut approvals, mut maskers, mut access) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for plugin in serving {
            match plugin {
                Loaded::Policy(p) => policies.push(p),
                Loaded::Approval(p) => approvals.push(p),
                Loaded::Masking(p) => maskers.push(p),
                Loaded::Access(p) => access.push(p),
            }
        }
        policies.sort_by(|a, b| a.priority.cmp(&b.priority).then(a.name.cmp(&b.name)));
        approvals.sort_by(|a, b| a.priority.cmp(&b.priority).then(a.name.cmp(&b.name)));
        maskers.sort_by(|a, b| a.priority.cmp(&b.priority).then(a.name.cmp(&b.name)));
        access.sort_by(|a, b| a.priority.cmp(&b.priority).then(a.name.cmp(&b.name)));
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
            .chain(
                access
                    .iter()
                    .map(|p| format!("{}@{} (access)", p.name, &p.hash[..12])),
            )
            .collect();
        self.current.store(Arc::new(PluginSet {
            policies,
            approvals,
            maskers,
            access,
            generation,
            missing,
        }));
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = status;
        tracing::info!(generation, plugins = ?summary, "plugin set swapped in");
        Ok(())
    }
}
