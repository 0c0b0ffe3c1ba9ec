//! Loading one plugin file: bounded compilation (through the compiled-artifact cache), the
//! component's kind from the contract interface it exports, and one instantiation against the
//! contract before it may replace a working version.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::bindings::v0_1::PolicyPluginPre;
use super::bindings::v0_1::access::AccessPluginPre;
use super::bindings::v0_1::approval::ApprovalPluginPre;
use super::directory;
use super::host::PluginHost;
use super::manifest::Manifest;
use super::masking_pre::MaskingPre;
use super::set::{Limits, Loaded, Plugin, PluginKind};

impl PluginHost {
    /// Loads one file. `Ok(None)`: disabled. Reuses `previous` when neither the component
    /// nor its manifest changed.
    pub(super) fn load(
        &self,
        file: &Path,
        name: &str,
        previous: Option<&Loaded>,
    ) -> Result<Option<Loaded>, String> {
        let manifest = Manifest::for_component(file)?;
        if !manifest.enabled {
            return Ok(None);
        }
        let bytes = std::fs::read(file).map_err(|e| format!("cannot read: {e}"))?;
        let hash =
            crate::audit::record::hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
        let limits = Limits {
            timeout: manifest.limits.timeout.unwrap_or(self.defaults.timeout),
            memory_bytes: manifest
                .limits
                .memory_mib
                .map(|m| (m as usize) << 20)
                .unwrap_or(self.defaults.memory_bytes),
        };
        if let Some(prev) = previous
            && prev.unchanged(&hash, &manifest, &limits)
        {
            return Ok(Some(prev.clone()));
        }
        let bounds = *self.bounds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(why) = bounds.refuse(&bytes) {
            return Err(why);
        }
        let component = self.compile(&bytes, &hash)?;
        let kind = exported_kind(&component, &self.engine)?;
        if manifest.strict && kind != PluginKind::Masking {
            return Err("`strict` in the manifest applies to masking plugins only".into());
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("imports something the gateway does not provide: {e:#}"))?;
        tracing::info!(
            plugin = name,
            ?kind,
            hash = &hash[..12],
            priority = manifest.priority,
            "plugin loaded"
        );
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let plugin = Plugin {
            id,
            name: Arc::from(name),
            hash: Arc::from(hash.as_str()),
            priority: manifest.priority,
            config: Arc::new(manifest.config),
            limits,
            strict: manifest.strict,
            pre: (),
        };
        let wrong = |world: &'static str| {
            move |e: wasmtime::Error| format!("is not a sluice:plugin/{world}@0.1 component: {e:#}")
        };
        let loaded = match kind {
            PluginKind::Policy => Loaded::Policy(Arc::new(
                plugin.with(PolicyPluginPre::new(pre).map_err(wrong("policy-plugin"))?),
            )),
            PluginKind::Approval => Loaded::Approval(Arc::new(
                plugin.with(ApprovalPluginPre::new(pre).map_err(wrong("approval-plugin"))?),
            )),
            PluginKind::Masking => Loaded::Masking(Arc::new(
                plugin.with(MaskingPre::new(pre).map_err(wrong("masking-plugin"))?),
            )),
            PluginKind::Access => Loaded::Access(Arc::new(
                plugin.with(AccessPluginPre::new(pre).map_err(wrong("access-plugin"))?),
            )),
        };
        self.instantiates(&loaded)?;
        Ok(Some(loaded))
    }

    /// Instantiates `plugin` once, as a session would, in a sandbox of its own: exports whose
    /// types do not match the world's (wasmtime checks them when instantiating), start code
    /// that traps, overruns or asks for more memory than allowed all fail here, so such a file
    /// never replaces the version serving. On a thread of its own, as reloads are called from
    /// both plain threads and the runtime's.
    pub(super) fn instantiates(&self, plugin: &Loaded) -> Result<(), String> {
        let attempt = || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(|e| format!("cannot start a runtime to instantiate it: {e}"))?;
            runtime
                .block_on(async {
                    match plugin {
                        Loaded::Policy(p) => {
                            let mut store = self.sandbox(p, 5);
                            p.pre.instantiate_async(&mut store).await.map(drop)
                        }
                        Loaded::Approval(p) => {
                            let mut store = self.sandbox(p, 5);
                            p.pre.instantiate_async(&mut store).await.map(drop)
                        }
                        Loaded::Masking(p) => {
                            let mut store = self.sandbox(p, 5);
                            p.pre.instantiate_async(&mut store).await.map(drop)
                        }
                        Loaded::Access(p) => {
                            let mut store = self.sandbox(p, 5);
                            p.pre.instantiate_async(&mut store).await.map(drop)
                        }
                    }
                })
                .map_err(|e| format!("cannot be instantiated: {e:#}"))
        };
        std::thread::scope(|scope| {
            scope
                .spawn(attempt)
                .join()
                .unwrap_or_else(|_| Err("instantiating it panicked".into()))
        })
    }

    /// Compiles, or loads the compiled artifact cached under the content hash.
    pub(super) fn compile(&self, bytes: &[u8], hash: &str) -> Result<Component, String> {
        let cached = self.cache_dir.join(format!("{hash}.cwasm"));
        // A compiled artifact is native code the gateway runs: only one nobody else could
        // have written is loaded.
        let trusted = || {
            directory::check_dir(&self.cache_dir)
                .and_then(|dir| directory::check_file(&dir, &cached))
                .map_err(
                    |why| tracing::warn!(%why, "compiled plugin cache not trusted; recompiling"),
                )
                .is_ok()
        };
        if cached.is_file() && trusted() {
            // Safety: the artifact and its directory belong to the gateway's user (or root)
            // and nobody else may write them (checked above), so it was written by
            // `Component::serialize` below; wasmtime also checks the artifact's engine version
            // and configuration and refuses a mismatch, in which case we recompile.
            match unsafe { Component::deserialize_file(&self.engine, &cached) } {
                Ok(component) => return Ok(component),
                Err(e) => tracing::debug!(error = %e, "stale compiled plugin; recompiling"),
            }
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| format!("is not a valid WebAssembly component: {e:#}"))?;
        if let Ok(serialized) = component.serialize() {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let tmp = cached.with_extension("tmp");
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .and_then(|mut file| file.write_all(&serialized));
            if written.is_ok() {
                let _ = std::fs::rename(&tmp, &cached);
            }
        }
        Ok(component)
    }
}

/// The kind of plugin a component is, from the one contract interface it exports.
fn exported_kind(component: &Component, engine: &Engine) -> Result<PluginKind, String> {
    let ty = component.component_type();
    let mut kinds = Vec::new();
    for (name, _) in ty.exports(engine) {
        // Any 0.1.x: a component built against 0.1.0 is served by the 0.1.3 bindings
        // (wasmtime matches semver-compatible names), one built against a later 0.1 fails to
        // link only if it imports what this gateway lacks.
        let Some((interface, version)) = name
            .strip_prefix("sluice:plugin/")
            .and_then(|rest| rest.split_once('@'))
        else {
            continue;
        };
        if !version.starts_with("0.1.") {
            continue;
        }
        match interface {
            "policy" => kinds.push(PluginKind::Policy),
            "approval" => kinds.push(PluginKind::Approval),
            "masking" => kinds.push(PluginKind::Masking),
            "access" => kinds.push(PluginKind::Access),
            _ => {}
        }
    }
    match kinds.as_slice() {
        [kind] => Ok(*kind),
        [] => Err(
            "exports no sluice:plugin@0.1 interface (policy, approval, masking or access)".into(),
        ),
        _ => Err("exports more than one plugin interface; build one component per kind".into()),
    }
}
