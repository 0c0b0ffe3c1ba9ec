//! `[plugins]` and `[masking]`: the plugin directory, the bounds of one plugin, and how masking
//! plugins are applied.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[plugins]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Directory of `<name>.wasm` components and `<name>.toml` manifests; absent, no plugins.
    pub dir: Option<PathBuf>,
    /// Time one plugin call may take (epoch deadline), unless its manifest says otherwise.
    #[serde(default = "default_plugin_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Linear-memory cap per plugin instance, MiB.
    #[serde(default = "default_plugin_memory")]
    pub memory_mib: u64,
    /// Quiet time after a change in `dir` before reloading.
    #[serde(default = "default_reload_debounce", with = "humantime_serde")]
    pub reload_debounce: Duration,
    /// Plugins (by file name without `.wasm`) that must be serving: while one is missing,
    /// fails to load with no earlier version to keep, or is disabled, every statement is
    /// refused, naming it.
    #[serde(default)]
    pub required: Vec<String>,
    /// The largest component file compiled, MiB.
    #[serde(default = "default_max_component_mib")]
    pub max_component_mib: u64,
    /// The most functions compiled across a component's core modules.
    #[serde(default = "default_max_functions")]
    pub max_functions: u64,
}

/// The default of `plugins.max_component_mib`.
pub const DEFAULT_MAX_COMPONENT_MIB: u64 = 64;
/// The default of `plugins.max_functions`: CPython's componentize-py component has ~13,400,
/// Rust plugins a few hundred.
pub const DEFAULT_MAX_FUNCTIONS: u64 = 50_000;

fn default_max_component_mib() -> u64 {
    DEFAULT_MAX_COMPONENT_MIB
}

fn default_max_functions() -> u64 {
    DEFAULT_MAX_FUNCTIONS
}

/// Whether `name` may name a plugin (a file of the plugin directory, an entry of
/// `plugins.required`): 1 to 64 ASCII letters, digits, `-` and `_`, not starting with `-`.
pub fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            dir: None,
            timeout: default_plugin_timeout(),
            memory_mib: default_plugin_memory(),
            reload_debounce: default_reload_debounce(),
            required: Vec::new(),
            max_component_mib: default_max_component_mib(),
            max_functions: default_max_functions(),
        }
    }
}

fn default_plugin_timeout() -> Duration {
    Duration::from_millis(20)
}

fn default_plugin_memory() -> u64 {
    64
}

fn default_reload_debounce() -> Duration {
    Duration::from_millis(200)
}

/// `[masking]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingConfig {
    /// How long the catalog cache (table OIDs, column names, view definitions) is trusted
    /// before it is read again. DDL through the gateway, and a table OID the cache does not
    /// know, refresh it at once.
    #[serde(default = "default_catalog_ttl", with = "humantime_serde")]
    pub catalog_ttl: Duration,
    /// Rows collected before a `custom` column's values go to its plugin in one call (fewer if
    /// the upstream pauses or the result ends).
    #[serde(default = "default_transform_batch")]
    pub transform_batch: usize,
    /// What a masked session's statement calling a user-defined function meets: `refuse`
    /// (default: its body may read masked tables and hand the values out) or `derive` (its
    /// results count as derived from every column of every table in the function's schema).
    #[serde(default)]
    pub user_functions: UserFunctions,
}

/// See [`MaskingConfig::user_functions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UserFunctions {
    #[default]
    Refuse,
    Derive,
}

impl Default for MaskingConfig {
    fn default() -> Self {
        MaskingConfig {
            catalog_ttl: default_catalog_ttl(),
            transform_batch: default_transform_batch(),
            user_functions: UserFunctions::default(),
        }
    }
}

fn default_catalog_ttl() -> Duration {
    Duration::from_secs(60)
}

fn default_transform_batch() -> usize {
    256
}
