//! `[audit]`: the tamper-evident log.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[audit]`: the tamper-evident record of sessions, statements, decisions and approvals.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Off: nothing is recorded (for benchmarks and throwaway setups).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The log file (relative to the config file); default `audit/audit.jsonl` in `data_dir`.
    /// Rotated files sit beside it as `<name>.<first seq>`, the signed head as `<name>.head`.
    pub path: Option<PathBuf>,
    /// When the record that allows a statement counts as written: `write` (handed to the
    /// kernel before the statement is forwarded: survives a crash of the gateway), `fsync`
    /// (also on disk before a statement that can change anything is forwarded — COMMIT,
    /// writes outside a transaction block, DDL, function calls; the records of the rest reach
    /// the disk within `sync_delay`, their rows relayed at once: a machine crash can lose the
    /// last few milliseconds of records of reads, never the record of a committed write) or
    /// `fsync-before-forward` (on disk before every statement is forwarded).
    #[serde(default)]
    pub durability: Durability,
    /// What a statement meets when the log cannot be written: `refuse` (fail closed) or
    /// `continue` (run it unrecorded, logging the failure).
    #[serde(default)]
    pub on_failure: OnAuditFailure,
    /// `full` text with parameter values, or `normalized` (constants replaced by `$n`, no
    /// parameter values).
    #[serde(default)]
    pub statement_text: StatementText,
    /// Rotate when the file reaches this many MiB (0: never by size).
    #[serde(default = "default_rotate_mib")]
    pub rotate_mib: u64,
    /// Rotate when the file is this old (0: never by age).
    #[serde(default, with = "humantime_serde")]
    pub rotate_interval: Option<Duration>,
    /// How often a signed checkpoint is written while records keep coming.
    #[serde(default = "default_checkpoint_interval", with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// With `fsync`: how long records nobody waits for (those of reads) may stay off the disk,
    /// gathering more for one flush. A record something waits for is flushed at once.
    #[serde(default = "default_sync_delay", with = "humantime_serde")]
    pub sync_delay: Duration,
}

fn default_sync_delay() -> Duration {
    Duration::from_millis(10)
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            path: None,
            durability: Durability::default(),
            on_failure: OnAuditFailure::default(),
            statement_text: StatementText::default(),
            rotate_mib: default_rotate_mib(),
            rotate_interval: None,
            checkpoint_interval: default_checkpoint_interval(),
            sync_delay: default_sync_delay(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    #[default]
    Write,
    Fsync,
    FsyncBeforeForward,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnAuditFailure {
    #[default]
    Refuse,
    Continue,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatementText {
    #[default]
    Full,
    Normalized,
}

fn default_true() -> bool {
    true
}
fn default_rotate_mib() -> u64 {
    256
}
fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(10)
}
