//! The audit log: JSON Lines, one record per event, each chained to the one before by a
//! SHA-256 hash and periodically sealed by a checkpoint signed with the gateway key, so that
//! `sluice audit verify` finds any edit, deletion, insertion, reordering or truncation.
//!
//! Records go to a writer thread ([`writer`]) in arrival order. The record that lets a
//! statement through is handed to the kernel before the statement is forwarded. With
//! `durability = "fsync"` it is also on disk before the statement can change anything
//! ([`Audit::durable`]: before forwarding a COMMIT, a write outside a transaction block, DDL,
//! a function call); the record of any other statement is on disk within `sync_delay`
//! ([`Audit::before_forward`]: forwarded once written, its rows relayed at once);
//! `fsync-before-forward` waits before forwarding every statement. When the log cannot be written, durable records fail and the
//! statement is refused, unless `on_failure = "continue"`.

mod encode;
mod event;
mod files;
pub mod record;
pub mod verify;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use event::{
    Decided, Decision, Event, MaskedColumn, Outcome, Protocol, StatementRecord, VoteRecord,
    checkpoint_message,
};
pub use files::{chain_files, head_path};

use crate::config::{AuditConfig, Durability, OnAuditFailure, StatementText};
use crate::identity::SigningKey;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open the audit log {path}: {source}")]
    Open {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the audit log cannot be written: {0}")]
    Write(String),
}

/// A handle on the log, shared by every session.
pub struct Audit {
    /// `None`: auditing is off.
    log: Option<Arc<writer::Log>>,
    fsync: bool,
    /// Every record that allows a statement is synced before the statement is forwarded.
    sync_before_forward: bool,
    failing: Arc<AtomicBool>,
    on_failure: OnAuditFailure,
    pub statement_text: StatementText,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Audit {
    /// Records nothing.
    pub fn disabled() -> Audit {
        Audit {
            log: None,
            fsync: false,
            sync_before_forward: false,
            failing: Arc::new(AtomicBool::new(false)),
            on_failure: OnAuditFailure::Continue,
            statement_text: StatementText::Full,
            thread: std::sync::Mutex::new(None),
        }
    }

    /// Opens the log at `path` and starts its background thread; signs checkpoints with `key`.
    pub fn start(
        config: &AuditConfig,
        path: std::path::PathBuf,
        key: Option<SigningKey>,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Result<Audit, AuditError> {
        if !config.enabled {
            return Ok(Audit::disabled());
        }
        let failing = Arc::new(AtomicBool::new(false));
        let fsync = config.durability != Durability::Write;
        let writer_config = writer::WriterConfig {
            path: path.clone(),
            fsync,
            rotate_bytes: config.rotate_mib << 20,
            rotate_interval: config.rotate_interval,
            checkpoint_interval: config.checkpoint_interval,
            sync_delay: config.sync_delay,
            key: key.map(Arc::new),
            metrics,
        };
        let log = writer::Log::open(writer_config, failing.clone())
            .map_err(|source| AuditError::Open { path, source })?;
        let background = log.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-audit".into())
            .spawn(move || background.run())
            .map_err(|source| AuditError::Open {
                path: std::path::PathBuf::new(),
                source,
            })?;
        Ok(Audit {
            log: Some(log),
            fsync,
            sync_before_forward: config.durability == Durability::FsyncBeforeForward,
            failing,
            on_failure: config.on_failure,
            statement_text: config.statement_text,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    pub fn enabled(&self) -> bool {
        self.log.is_some()
    }

    /// A statement text as `statement_text` says to record it.
    pub fn text(&self, sql: &str) -> String {
        match self.statement_text {
            StatementText::Full => sql.to_owned(),
            StatementText::Normalized => {
                pg_query::normalize(sql).unwrap_or_else(|_| "(unparsable; text withheld)".into())
            }
        }
    }

    /// Whether the last write failed (for readiness and metrics).
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Whether statements are being refused because the log cannot be written.
    pub fn refusing(&self) -> bool {
        self.on_failure == OnAuditFailure::Refuse && self.failing()
    }

    /// Records `event` without waiting for it (written within a few milliseconds, or with the
    /// next durable record).
    pub fn record(&self, event: Event) {
        if let Some(log) = &self.log {
            let _ = log.append(&event, false, false);
        }
    }

    /// Records `event` and returns once it is written as `durability` says. An error means the
    /// record is not in the log and, with `on_failure = "refuse"`, that what it would have
    /// allowed must not happen.
    pub async fn durable(&self, event: Event) -> Result<(), AuditError> {
        let Some(log) = &self.log else {
            return Ok(());
        };
        let mut result = log.append(&event, true, self.fsync);
        if self.fsync
            && let Ok(bytes) = result
        {
            result = log.synced(bytes).await.map(|()| bytes);
        }
        match result {
            Ok(_) => Ok(()),
            Err(e) => self.lost(e),
        }
    }

    /// Records `event`, allowing a statement that cannot change anything by running now, and
    /// returns once it is handed to the kernel. With fsync durability its record reaches the
    /// disk within `sync_delay`, gathered with others into one flush, and nothing waits for
    /// that: a machine crash can lose the last few milliseconds of such records, never one a
    /// write waited for. With `fsync-before-forward` it waits for the disk, as [`Audit::durable`].
    pub async fn before_forward(&self, event: Event) -> Result<(), AuditError> {
        if self.sync_before_forward {
            return self.durable(event).await;
        }
        let Some(log) = &self.log else {
            return Ok(());
        };
        match log.append(&event, true, false) {
            // Records after a failed sync may never reach the disk: as a write failure.
            Ok(_) if self.fsync && log.sync_has_failed() => {
                self.lost("an earlier fdatasync of the audit log failed".into())
            }
            Ok(_) => Ok(()),
            Err(e) => self.lost(e),
        }
    }

    /// Whether every record written so far is on disk (fsync durability).
    #[cfg(test)]
    pub(crate) fn all_on_disk(&self) -> bool {
        self.log.as_ref().is_none_or(|log| log.all_synced())
    }

    /// A durable record that did not make it: fine only with `on_failure = "continue"`.
    fn lost(&self, e: String) -> Result<(), AuditError> {
        if self.on_failure == OnAuditFailure::Continue {
            tracing::warn!(error = %e, "audit record lost; continuing as configured (audit.on_failure)");
            return Ok(());
        }
        Err(AuditError::Write(e))
    }

    /// Writes `audit_close` and a final checkpoint, and stops the background thread.
    pub async fn close(&self) {
        let Some(log) = self.log.clone() else {
            return;
        };
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        let _ = tokio::task::spawn_blocking(move || {
            log.stop();
            if let Some(thread) = thread {
                let _ = thread.join();
            }
        })
        .await;
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        // A gateway dropped without `close` still ends its log cleanly.
        if let Some(log) = &self.log {
            log.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn config() -> AuditConfig {
        AuditConfig {
            checkpoint_interval: std::time::Duration::from_secs(3600),
            ..AuditConfig::default()
        }
    }

    fn end(session: u64) -> Event {
        Event::SessionEnd {
            session,
            subject: "agent".into(),
            duration_ms: 1,
            statements: 0,
            reason: "client-terminated".into(),
        }
    }

    /// A log of `n` session records written and closed by a real writer; returns its path
    /// and the trusted public key.
    async fn log(dir: &Path, n: u64) -> (PathBuf, Vec<u8>) {
        let path = dir.join("audit.jsonl");
        let key = SigningKey::generate().unwrap();
        let public = key.public_key().to_vec();
        let audit = Audit::start(&config(), path.clone(), Some(key), None).unwrap();
        for i in 0..n {
            audit.durable(end(i)).await.unwrap();
        }
        audit.close().await;
        (path, public)
    }

    fn check(path: &Path, key: &[u8]) -> verify::Report {
        verify::verify(&chain_files(path), Some(&head_path(path)), Some(key))
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    }

    #[tokio::test]
    async fn an_untouched_log_verifies_with_its_checkpoints_and_signature() {
        let dir = tempfile::tempdir().unwrap();
        let (path, key) = log(dir.path(), 5).await;
        let report = check(&path, &key);
        assert!(report.ok(), "{:?}", report.problems);
        // audit_open, five records, audit_close, the closing checkpoint.
        assert_eq!(report.records, 8);
        assert_eq!(report.checkpoints, 1);
        assert!(report.signatures_verified);
    }

    #[tokio::test]
    async fn every_kind_of_tampering_is_found_and_located() {
        let dir = tempfile::tempdir().unwrap();
        let (path, key) = log(dir.path(), 6).await;
        let original = lines(&path);
        let at = |report: &verify::Report| {
            assert!(!report.ok(), "tampering went unnoticed");
            report.problems[0].line
        };

        // Edit: record on line 3 changed; the break shows at line 4, naming line 3.
        let mut edited = original.clone();
        edited[2] = edited[2].replace("\"duration_ms\":1", "\"duration_ms\":2");
        write_lines(&path, &edited);
        let report = check(&path, &key);
        assert_eq!(at(&report), 4);
        assert!(
            report.problems[0].what.contains("edited"),
            "{}",
            report.problems[0]
        );
        assert!(
            report.problems[0].what.contains(":3)"),
            "{}",
            report.problems[0]
        );

        // Deletion of line 4.
        let mut deleted = original.clone();
        deleted.remove(3);
        write_lines(&path, &deleted);
        let report = check(&path, &key);
        assert_eq!(at(&report), 4);
        assert!(
            report.problems[0].what.contains("missing"),
            "{}",
            report.problems[0]
        );

        // Insertion: a copy of line 2 inserted after line 4.
        let mut inserted = original.clone();
        inserted.insert(4, original[1].clone());
        write_lines(&path, &inserted);
        let report = check(&path, &key);
        assert_eq!(at(&report), 5);
        assert!(
            report.problems[0].what.contains("inserted"),
            "{}",
            report.problems[0]
        );

        // Reordering: lines 3 and 4 swapped.
        let mut swapped = original.clone();
        swapped.swap(2, 3);
        write_lines(&path, &swapped);
        let report = check(&path, &key);
        assert_eq!(at(&report), 3);

        // Truncation: the last three records cut off; the signed head still names the end.
        write_lines(&path, &original[..original.len() - 3]);
        let report = check(&path, &key);
        assert!(!report.ok());
        assert!(
            report.problems[0].what.contains("truncated"),
            "{}",
            report.problems[0]
        );

        // A checkpoint re-signed with another key is a forgery.
        std::fs::write(&path, original.join("\n") + "\n").unwrap();
        let other = SigningKey::generate().unwrap();
        let report = check(&path, other.public_key());
        assert!(report.problems.iter().any(|p| p.what.contains("forged")));

        // And the original verifies again.
        assert!(check(&path, &key).ok());
    }

    #[tokio::test]
    async fn a_restart_continues_the_chain_and_notes_an_unclean_stop_and_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let (path, key) = log(dir.path(), 2).await;
        // A crash mid-write: half a record at the end, no audit_close.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"seq\":99,\"ty");
        std::fs::write(&path, text).unwrap();
        let audit = Audit::start(
            &config(),
            path.clone(),
            Some(SigningKey::generate().unwrap()),
            None,
        )
        .unwrap();
        audit.durable(end(9)).await.unwrap();
        audit.close().await;
        let report = verify::verify(&chain_files(&path), None, None);
        assert!(report.ok(), "{:?}", report.problems);
        let reopened = lines(&path)
            .into_iter()
            .find(|l| l.contains("audit_open") && l.contains("torn_bytes\":13"));
        assert!(reopened.is_some(), "the torn bytes are recorded");
        // The second run signed with another key: with the first run's key, its checkpoint fails.
        assert!(!check(&path, &key).ok());
    }

    /// A log in `dir` rotated at every write 1 ms after the last rotation; its path and the
    /// trusted public key.
    fn rotating_log(dir: &Path) -> (PathBuf, Vec<u8>, Audit) {
        let path = dir.join("audit.jsonl");
        let key = SigningKey::generate().unwrap();
        let public = key.public_key().to_vec();
        let config = AuditConfig {
            rotate_mib: 0,
            rotate_interval: Some(std::time::Duration::from_millis(1)),
            ..config()
        };
        let audit = Audit::start(&config, path.clone(), Some(key), None).unwrap();
        (path, public, audit)
    }

    #[tokio::test]
    async fn rotation_keeps_one_chain_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let (path, public, audit) = rotating_log(dir.path());
        for i in 0..5 {
            audit.durable(end(i)).await.unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        audit.close().await;
        let files = chain_files(&path);
        assert!(files.len() >= 3, "{files:?}");
        let report = check(&path, &public);
        assert!(report.ok(), "{:?}", report.problems);
        // Removing a whole rotated file from the middle is a deletion.
        std::fs::remove_file(&files[1]).unwrap();
        assert!(check(&path, &public).problems[0].what.contains("missing"));
    }

    #[tokio::test]
    async fn verifying_only_the_newest_file_of_a_live_rotated_log_is_not_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let (path, public, audit) = rotating_log(dir.path());
        audit.durable(end(0)).await.unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        // Written, then rotated: the head now covers a record of the rotated file.
        audit.durable(end(1)).await.unwrap();
        audit.durable(end(2)).await.unwrap();
        assert!(chain_files(&path).len() >= 2);
        let newest = verify::verify(
            std::slice::from_ref(&path),
            Some(&head_path(&path)),
            Some(&public),
        );
        assert!(newest.ok(), "{:?}", newest.problems);
        assert!(
            newest
                .notes
                .iter()
                .any(|n| n.contains("give the earlier files")),
            "{:?}",
            newest.notes
        );
        assert!(check(&path, &public).ok());
        drop(audit);
    }

    #[tokio::test]
    async fn an_unwritable_log_fails_durable_records_unless_told_to_continue() {
        let refuse = Audit::start(&config(), "/dev/full".into(), None, None).unwrap();
        assert!(matches!(
            refuse.durable(end(1)).await,
            Err(AuditError::Write(_))
        ));
        assert!(refuse.failing());
        let go_on = AuditConfig {
            on_failure: OnAuditFailure::Continue,
            ..config()
        };
        let go_on = Audit::start(&go_on, "/dev/full".into(), None, None).unwrap();
        assert!(go_on.durable(end(1)).await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_fsync_durability_concurrent_records_share_syncs_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let key = SigningKey::generate().unwrap();
        let public = key.public_key().to_vec();
        let config = AuditConfig {
            durability: Durability::Fsync,
            ..config()
        };
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let audit = Arc::new(
            Audit::start(&config, path.clone(), Some(key), Some(metrics.clone())).unwrap(),
        );
        let mut tasks = Vec::new();
        for i in 0..64 {
            let audit = audit.clone();
            tasks.push(tokio::spawn(async move { audit.durable(end(i)).await }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        audit.close().await;
        let report = check(&path, &public);
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(report.records, 64 + 3);
        let syncs = metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix("sluice_audit_write_seconds_count "))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap();
        assert!(
            syncs < 64,
            "group commit: {syncs} syncs for 64 waiting records"
        );
    }
}
