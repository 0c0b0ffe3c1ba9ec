//! `<name>.toml` beside `<name>.wasm`: priority, enabled, config values, limit overrides.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// A plugin's manifest. Every field is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Lower runs first. Default 100.
    #[serde(default = "default_priority")]
    pub priority: i32,
    /// A disabled plugin is not loaded.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Values the plugin reads with the `config` host import.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Masking plugins only: refuse statements that use a column this plugin masks in a
    /// condition or an ordering (WHERE, JOIN ... ON, GROUP BY, HAVING, ORDER BY, window
    /// clauses, CASE conditions, FILTER), so that a masked column answers no yes/no question.
    #[serde(default)]
    pub strict: bool,
    /// While this plugin is not serving (its file removed, corrupted, disabled), every
    /// statement is refused. Remembered once seen, so removing the manifest with the file
    /// does not lift it; `[plugins] required` says it where the directory cannot be trusted.
    #[serde(default)]
    pub required: bool,
}

/// Per-plugin sandbox limits; absent values take the `[plugins]` defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    /// Time one call may take.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Linear memory cap in MiB.
    pub memory_mib: Option<u64>,
}

fn default_priority() -> i32 {
    100
}
fn default_enabled() -> bool {
    true
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            priority: default_priority(),
            enabled: true,
            config: BTreeMap::new(),
            limits: LimitOverrides::default(),
            strict: false,
            required: false,
        }
    }
}

impl Manifest {
    /// The manifest beside `wasm`, or the defaults when there is none.
    pub fn for_component(wasm: &Path) -> Result<Manifest, String> {
        let path = wasm.with_extension("toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}
