//! Where records are sealed and written. Sessions append on their own threads: the event is
//! serialized outside the lock; under it the record gets its `seq` and `prev`, is hashed and
//! joins the pending bytes. A record that must be durable writes everything pending with it
//! (one `write`), so records that need not wait — results, session ends — ride along with the
//! next one that does, and a background thread writes them out within a few milliseconds
//! otherwise. With `fsync` durability that thread is also the syncer: it `fdatasync`s whatever
//! has been written since its last sync — at once when a session waits for it, else once the
//! oldest unsynced record has waited `sync_delay` — and wakes every session waiting for those
//! bytes at once: group commit across sessions, one disk flush per round however many wait.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::watch;

use super::event::{Event, checkpoint_message};
use super::files;
use super::record::{self, GENESIS};
use crate::identity::SigningKey;

pub struct WriterConfig {
    pub path: PathBuf,
    pub fsync: bool,
    /// 0: never by size.
    pub rotate_bytes: u64,
    pub rotate_interval: Option<Duration>,
    pub checkpoint_interval: Duration,
    /// With fsync: how long records nobody waits for may stay unsynced.
    pub sync_delay: Duration,
    pub key: Option<Arc<SigningKey>>,
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// How often records that nobody waits for are written out at the latest.
const LINGER: Duration = Duration::from_millis(5);

/// Bytes written and bytes known to be on disk, counted from the start of this run (across
/// rotations); `failed` once a sync failed.
#[derive(Debug, Clone, Copy, Default)]
struct Synced {
    bytes: u64,
    failed: bool,
}

pub struct Log {
    config: WriterConfig,
    inner: Mutex<Inner>,
    /// Wakes the background thread: something to write or sync, or stop.
    wake: Condvar,
    synced: watch::Sender<Synced>,
    failing: Arc<AtomicBool>,
}

struct Inner {
    file: Option<Arc<File>>,
    /// Bytes in the current file.
    len: u64,
    file_first_seq: u64,
    opened: Instant,
    /// The next record's `seq` and `prev`.
    seq: u64,
    prev: String,
    /// Sealed lines not yet written, and the chain state at their start (restored if they
    /// cannot be written).
    pending: Vec<u8>,
    pending_from: (u64, String),
    /// Bytes written in this run.
    written: u64,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    stopping: bool,
    /// The background thread waits for work (with fsync durability, a record someone will
    /// wait for wakes it; otherwise it is busy syncing and finds the record when it looks
    /// again).
    syncer_idle: bool,
    /// Bytes (of this run) a session will wait to see on disk: synced at once.
    wanted: u64,
    /// Since when written bytes have been waiting for a sync: due `sync_delay` after.
    unsynced_since: Option<Instant>,
    /// The last timestamp written, in milliseconds and as text: records come many per
    /// millisecond.
    stamp: (u64, String),
}

impl Log {
    /// Opens the log and finds where its chain ends (cutting a torn last line); the run's first
    /// record, `audit_open`, is written before this returns.
    pub fn open(config: WriterConfig, failing: Arc<AtomicBool>) -> std::io::Result<Arc<Log>> {
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let (mut seq, mut prev, mut unclean, mut torn) = (0, GENESIS.to_owned(), false, 0);
        // The chain continues from the newest file that has a record.
        for path in files::chain_files(&config.path).iter().rev() {
            let mut file = OpenOptions::new().read(true).write(true).open(path)?;
            if !file.metadata()?.is_file() {
                break;
            }
            let total = file.metadata()?.len();
            let Some((line, end)) = files::last_line(&mut file)? else {
                if total > 0 {
                    file.set_len(0)?;
                    torn += total;
                }
                continue;
            };
            if end < total {
                file.set_len(end)?;
                torn += total - end;
            }
            let last: Value = serde_json::from_slice(&line).map_err(|e| {
                std::io::Error::other(format!(
                    "the last record of {} is not JSON ({e}); run `sluice audit verify`",
                    path.display()
                ))
            })?;
            seq = last["seq"].as_u64().unwrap_or(0) + 1;
            prev = record::line_hash(&line);
            unclean = last["type"] != "audit_close";
            break;
        }
        let file = open_append(&config.path)?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let log = Arc::new(Log {
            config,
            inner: Mutex::new(Inner {
                file: Some(Arc::new(file)),
                len,
                file_first_seq: seq,
                opened: Instant::now(),
                pending_from: (seq, prev.clone()),
                seq,
                prev,
                pending: Vec::new(),
                written: 0,
                since_checkpoint: 0,
                last_checkpoint: Instant::now(),
                stopping: false,
                syncer_idle: false,
                wanted: 0,
                unsynced_since: None,
                stamp: (u64::MAX, String::new()),
            }),
            wake: Condvar::new(),
            synced: watch::Sender::new(Synced::default()),
            failing,
        });
        let opened = Event::AuditOpen {
            unclean,
            torn_bytes: torn,
        };
        // Not fatal: a log that cannot be written now refuses statements until it can.
        let _ = log.append(&opened, true, false);
        Ok(log)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seals `event` into the chain. With `flush`, everything pending is written before this
    /// returns, and the result is the byte count the caller must see synced (fsync durability)
    /// for its record to be on disk; `waits`: the caller will wait for that, so the syncer
    /// starts now instead of gathering for `sync_delay`.
    pub fn append(&self, event: &Event, flush: bool, waits: bool) -> Result<u64, String> {
        thread_local! {
            /// Where this thread serializes its events: one buffer reused, not one per record.
            static BODY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BODY.with_borrow_mut(|body| {
            body.clear();
            let result = super::encode::write(event, body)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    self.append_body(body, matches!(event, Event::AuditClose {}), flush, waits)
                });
            // One huge statement text must not stay allocated on every thread that saw one.
            if body.capacity() > 1 << 20 {
                *body = Vec::new();
            }
            result
        })
    }

    /// [`Log::append`] of an event serialized as `body`, under the lock.
    fn append_body(
        &self,
        body: &[u8],
        closing: bool,
        flush: bool,
        waits: bool,
    ) -> Result<u64, String> {
        let mut inner = self.lock();
        if inner.stopping && !closing {
            return Err("the audit log is closed".into());
        }
        inner.seal(body, now_ms());
        if !flush {
            return Ok(inner.written);
        }
        let result = self.flush(&mut inner);
        if result.is_ok() && waits {
            // Under the lock the syncer checks it under: it cannot miss it, asleep or not.
            inner.wanted = inner.wanted.max(inner.written);
            if inner.syncer_idle {
                self.wake.notify_one();
            }
        }
        result.map(|()| inner.written)
    }

    /// Writes everything pending. On failure the pending records are dropped and the chain
    /// continues from the last record written.
    fn flush(&self, inner: &mut Inner) -> Result<(), String> {
        if inner.pending.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let written = inner.write_pending(&self.config.path);
        if let Some(metrics) = &self.config.metrics
            && !self.config.fsync
        {
            metrics
                .audit_write_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        match written {
            // A failed fdatasync leaves earlier writes of unknown durability: the log stays
            // failing (and durable records refused) however later writes fare.
            Ok(()) if self.synced.borrow().failed => {
                self.rotate_or_checkpoint_if_due(inner);
                Ok(())
            }
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::warn!(path = %self.config.path.display(), "audit log writable again");
                }
                self.rotate_or_checkpoint_if_due(inner);
                Ok(())
            }
            Err(e) => {
                if let Some(metrics) = &self.config.metrics {
                    metrics.audit_write_failures.inc();
                }
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(path = %self.config.path.display(), error = %e, "audit log write failed");
                }
                Err(e.to_string())
            }
        }
    }

    fn rotate_or_checkpoint_if_due(&self, inner: &mut Inner) {
        let by_size = self.config.rotate_bytes > 0 && inner.len >= self.config.rotate_bytes;
        let by_age = self
            .config
            .rotate_interval
            .is_some_and(|every| !every.is_zero() && inner.opened.elapsed() >= every);
        if (by_size || by_age) && inner.len > 0 {
            self.rotate(inner);
        } else if inner.since_checkpoint > 0
            && inner.last_checkpoint.elapsed() >= self.config.checkpoint_interval
        {
            self.checkpoint(inner);
        }
    }

    /// Signs the chain's current end, into the log and into the head file.
    fn checkpoint(&self, inner: &mut Inner) {
        inner.last_checkpoint = Instant::now();
        let Some(key) = self.config.key.clone() else {
            inner.since_checkpoint = 0;
            return;
        };
        let covers_seq = inner.seq.saturating_sub(1);
        let covers_hash = inner.prev.clone();
        let signature = record::hex(&key.sign(&checkpoint_message(covers_seq, &covers_hash)));
        let event = Event::Checkpoint {
            covers_seq,
            covers_hash,
            key: record::hex(key.public_key()),
            signature,
        };
        let Ok(body) = serde_json::to_vec(&event) else {
            return;
        };
        inner.seal(&body, now_ms());
        if inner.write_pending(&self.config.path).is_err() {
            return;
        }
        inner.since_checkpoint = 0;
        let head_path = files::head_path(&self.config.path);
        let tmp = head_path.with_extension("head.tmp");
        let written = std::fs::write(&tmp, [body.as_slice(), b"\n"].concat())
            .and_then(|()| {
                if self.config.fsync {
                    File::open(&tmp)?.sync_all()?;
                }
                Ok(())
            })
            .and_then(|()| std::fs::rename(&tmp, &head_path));
        if let Err(e) = written {
            tracing::error!(path = %head_path.display(), error = %e, "audit head not written");
        }
    }

    fn rotate(&self, inner: &mut Inner) {
        self.checkpoint(inner);
        // The old file's unsynced bytes count as synced after this (the syncer has no file
        // for them any more): a failure here is a failed sync.
        if let Some(file) = &inner.file
            && let Err(e) = file.sync_all()
            && self.config.fsync
        {
            self.sync_failed(&e);
        }
        let rotated = files::rotated_path(&self.config.path, inner.file_first_seq);
        inner.file = None;
        match std::fs::rename(&self.config.path, &rotated) {
            Ok(()) => {
                tracing::info!(to = %rotated.display(), "audit log rotated");
                inner.len = 0;
                inner.file_first_seq = inner.seq;
                inner.opened = Instant::now();
            }
            Err(e) => tracing::error!(error = %e, "audit log rotation failed"),
        }
    }

    /// Whether every record appended is on disk (none pending, none unsynced).
    #[cfg(test)]
    pub fn all_synced(&self) -> bool {
        let inner = self.lock();
        inner.pending.is_empty() && inner.written <= self.synced.borrow().bytes
    }

    /// Waits (async) until the first `bytes` of this run are on disk.
    pub async fn synced(&self, bytes: u64) -> Result<(), String> {
        let mut rx = self.synced.subscribe();
        match rx.wait_for(|s| s.bytes >= bytes || s.failed).await {
            Ok(state) if !state.failed || state.bytes >= bytes => Ok(()),
            Ok(_) => Err("fdatasync failed".into()),
            Err(_) => Err("the audit syncer stopped".into()),
        }
    }

    /// The background thread: writes lingering records, syncs (fsync durability), writes
    /// checkpoints when due; stops after [`Log::stop`].
    pub fn run(self: Arc<Log>) {
        let mut inner = self.lock();
        loop {
            if inner.stopping {
                return;
            }
            // Unsynced bytes a session waits for: sync now (group commit: all that arrived
            // meanwhile goes with them). Nobody waiting (records of reads): sync once the
            // oldest has waited `sync_delay`. Records nobody flushed yet go out every LINGER.
            let sync_due = self.sync_due(&inner);
            let wait = if sync_due {
                Duration::ZERO
            } else {
                match (self.config.fsync, inner.unsynced_since) {
                    (true, Some(since)) => LINGER.min(
                        (since + self.config.sync_delay).saturating_duration_since(Instant::now()),
                    ),
                    _ => LINGER,
                }
            };
            if !wait.is_zero() {
                inner.syncer_idle = self.config.fsync;
                inner = self
                    .wake
                    .wait_timeout(inner, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                inner.syncer_idle = false;
            }
            if inner.stopping {
                return;
            }
            if !inner.pending.is_empty() {
                let _ = self.flush(&mut inner);
            } else if inner.since_checkpoint > 0
                && inner.last_checkpoint.elapsed() >= self.config.checkpoint_interval
            {
                self.checkpoint(&mut inner);
            }
            if self.sync_due(&inner) {
                let (file, target) = (inner.file.clone(), inner.written);
                // What is written from here on waits for the next sync.
                inner.unsynced_since = None;
                // Sessions keep appending while the disk works.
                drop(inner);
                let started = Instant::now();
                let synced = file.map_or(Ok(()), |f| f.sync_data());
                if let Some(metrics) = &self.config.metrics {
                    metrics
                        .audit_write_seconds
                        .observe(started.elapsed().as_secs_f64());
                }
                match synced {
                    Ok(()) => self.synced.send_modify(|s| s.bytes = s.bytes.max(target)),
                    Err(e) => self.sync_failed(&e),
                }
                inner = self.lock();
            }
        }
    }

    /// Whether the syncer should sync now: fsync durability, bytes written and not synced, and
    /// a session waiting for them or the oldest of them waiting `sync_delay` already.
    fn sync_due(&self, inner: &Inner) -> bool {
        let synced = self.synced.borrow().bytes;
        self.config.fsync
            && inner.written > synced
            && (inner.wanted > synced
                || inner
                    .unsynced_since
                    .is_some_and(|since| since.elapsed() >= self.config.sync_delay))
    }

    /// A sync failed: what was written may not be on disk, and nothing is trusted to be from
    /// now on (durable records, and statements recorded without waiting, are refused).
    fn sync_failed(&self, e: &std::io::Error) {
        tracing::error!(error = %e, "audit log fdatasync failed");
        self.failing.store(true, Ordering::Relaxed);
        self.synced.send_modify(|s| s.failed = true);
    }

    /// Whether a sync has failed (fsync durability).
    pub fn sync_has_failed(&self) -> bool {
        self.synced.borrow().failed
    }

    /// Writes `audit_close` and a final checkpoint, syncs, and stops the background thread.
    pub fn stop(&self) {
        let mut inner = self.lock();
        if inner.stopping {
            return;
        }
        let close = serde_json::to_vec(&Event::AuditClose {}).unwrap_or_default();
        inner.seal(&close, now_ms());
        if self.flush(&mut inner).is_ok() {
            self.checkpoint(&mut inner);
        }
        if let Some(file) = &inner.file {
            let _ = file.sync_all();
        }
        let written = inner.written;
        self.synced.send_modify(|s| s.bytes = s.bytes.max(written));
        inner.stopping = true;
        drop(inner);
        self.wake.notify_all();
    }
}

impl Inner {
    /// Appends the record with this serialized event body to the pending bytes.
    fn seal(&mut self, body: &[u8], ts_ms: u64) {
        if self.pending.is_empty() {
            self.pending_from = (self.seq, self.prev.clone());
        }
        if self.stamp.0 != ts_ms {
            self.stamp = (ts_ms, record::rfc3339_ms(ts_ms));
        }
        self.prev = record::seal_body(body, self.seq, &self.prev, &self.stamp.1, &mut self.pending);
        self.seq += 1;
        self.since_checkpoint += 1;
    }

    fn write_pending(&mut self, path: &std::path::Path) -> std::io::Result<()> {
        let result = (|| {
            if self.file.is_none() {
                self.file = Some(Arc::new(open_append(path)?));
            }
            let mut file: &File = self.file.as_deref().expect("opened above");
            file.write_all(&self.pending)
        })();
        match result {
            Ok(()) => {
                let n = self.pending.len() as u64;
                self.len += n;
                self.written += n;
                self.pending.clear();
                self.unsynced_since.get_or_insert_with(Instant::now);
                Ok(())
            }
            Err(e) => {
                // Nothing of the pending records counts: cut what part of them may have
                // reached the file, and continue the chain from the last record written.
                if let Some(file) = self.file.take() {
                    let _ = file.set_len(self.len);
                }
                let (seq, prev) = self.pending_from.clone();
                self.since_checkpoint = self.since_checkpoint.saturating_sub(self.seq - seq);
                self.seq = seq;
                self.prev = prev;
                self.pending.clear();
                Err(e)
            }
        }
    }
}

fn open_append(path: &std::path::Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
