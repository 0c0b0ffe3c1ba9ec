//! The plugins serving at one moment: each loaded component with its kind, priority, limits
//! and config, and the set of them that is swapped in whole at a reload.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::bindings::v0_1::PolicyPluginPre;
use super::bindings::v0_1::access::AccessPluginPre;
use super::bindings::v0_1::approval::ApprovalPluginPre;
use super::manifest::Manifest;
use super::masking_pre::MaskingPre;
use super::state::PluginState;

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
    pub(super) pre: Pre,
}

/// Decides statements (`policy-plugin` world).
pub type PolicyPlugin = Plugin<PolicyPluginPre<PluginState>>;
/// Routes approval requests (`approval-plugin` world).
pub type ApprovalPlugin = Plugin<ApprovalPluginPre<PluginState>>;
/// Masks result columns (`masking-plugin` world, `masking-reuse` optional).
pub type MaskingPlugin = Plugin<MaskingPre>;
/// Decides requests for access (`access-plugin` world).
pub type AccessPlugin = Plugin<AccessPluginPre<PluginState>>;

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
    pub(super) fn with<Pre>(self, pre: Pre) -> Plugin<Pre> {
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
    pub(super) fn unchanged(&self, hash: &str, manifest: &Manifest, limits: &Limits) -> bool {
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
    Access,
}

/// One loaded file, of whichever kind.
#[derive(Debug, Clone)]
pub(super) enum Loaded {
    Policy(Arc<PolicyPlugin>),
    Approval(Arc<ApprovalPlugin>),
    Masking(Arc<MaskingPlugin>),
    Access(Arc<AccessPlugin>),
}

/// Runs `$body` with `$p` bound to the plugin of whichever kind `$loaded` holds.
macro_rules! each_kind {
    ($loaded:expr, $p:ident => $body:expr) => {
        match $loaded {
            Loaded::Policy($p) => $body,
            Loaded::Approval($p) => $body,
            Loaded::Masking($p) => $body,
            Loaded::Access($p) => $body,
        }
    };
}

impl Loaded {
    pub(super) fn kind(&self) -> PluginKind {
        match self {
            Loaded::Policy(_) => PluginKind::Policy,
            Loaded::Approval(_) => PluginKind::Approval,
            Loaded::Masking(_) => PluginKind::Masking,
            Loaded::Access(_) => PluginKind::Access,
        }
    }

    pub(super) fn id(&self) -> u64 {
        each_kind!(self, p => p.id)
    }

    pub(super) fn hash(&self) -> &str {
        each_kind!(self, p => &p.hash)
    }

    pub(super) fn priority(&self) -> i32 {
        each_kind!(self, p => p.priority)
    }

    pub(super) fn unchanged(&self, hash: &str, manifest: &Manifest, limits: &Limits) -> bool {
        each_kind!(self, p => p.unchanged(hash, manifest, limits))
    }
}

/// The plugins serving right now, each kind in the order it runs.
#[derive(Debug, Default)]
pub struct PluginSet {
    pub policies: Vec<Arc<PolicyPlugin>>,
    pub approvals: Vec<Arc<ApprovalPlugin>>,
    pub maskers: Vec<Arc<MaskingPlugin>>,
    pub access: Vec<Arc<AccessPlugin>>,
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

    pub(super) fn loaded(&self) -> impl Iterator<Item = (&str, Loaded)> {
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
        let access = self
            .access
            .iter()
            .map(|p| (&*p.name, Loaded::Access(p.clone())));
        policies.chain(approvals).chain(maskers).chain(access)
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
