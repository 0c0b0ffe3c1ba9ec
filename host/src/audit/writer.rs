//! The writer thread: records arrive on a channel, are sealed into the hash chain in arrival
//! order and written in batches. Everything that arrived while the previous batch was being
//! written goes out in the next one, with one write and (for `fsync` durability) one
//! `fdatasync`: group commit across sessions, so a busy gateway pays for disk syncs per batch,
//! not per statement. Callers that need their record durable wait for the batch's
//! acknowledgement.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::oneshot;

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
    pub key: Option<Arc<SigningKey>>,
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

// Records are nearly every command; boxing them to shrink the once-per-run Close would cost
// an allocation per record.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    Record(Event, Option<oneshot::Sender<Result<(), String>>>),
    /// Write `audit_close` and a final checkpoint, then stop.
    Close(oneshot::Sender<()>),
}

/// At most this many records go into one batch.
const MAX_BATCH: usize = 4096;

pub struct Writer {
    config: WriterConfig,
    file: Option<File>,
    /// Bytes in the current file.
    len: u64,
    /// Sequence number of the current file's first record.
    file_first_seq: u64,
    opened: Instant,
    /// The next record's sequence number and the hash it chains to.
    seq: u64,
    prev: String,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// Set while the log cannot be written; cleared by the next successful batch.
    failing: Arc<AtomicBool>,
}

impl Writer {
    /// Opens the log and finds where its chain ends (repairing a torn last line). The first
    /// record of this run, `audit_open`, is queued by the caller.
    pub fn open(
        config: WriterConfig,
        failing: Arc<AtomicBool>,
    ) -> std::io::Result<(Writer, Event)> {
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
                    // One torn line and nothing else.
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
            prev = record::hash(&last);
            unclean = last["type"] != "audit_close";
            break;
        }
        let file = open_append(&config.path)?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let writer = Writer {
            config,
            file: Some(file),
            len,
            file_first_seq: seq,
            opened: Instant::now(),
            seq,
            prev,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            failing,
        };
        Ok((
            writer,
            Event::AuditOpen {
                unclean,
                torn_bytes: torn,
            },
        ))
    }

    pub fn run(mut self, commands: Receiver<Command>) {
        let mut batch = Vec::new();
        loop {
            let wait = if self.since_checkpoint > 0 {
                self.config
                    .checkpoint_interval
                    .saturating_sub(self.last_checkpoint.elapsed())
            } else {
                Duration::from_secs(3600)
            };
            match commands.recv_timeout(wait) {
                Ok(command) => batch.push(command),
                Err(RecvTimeoutError::Timeout) => {
                    self.checkpoint_if_due();
                    continue;
                }
                // Every handle is gone without a Close: stop as cleanly as we can.
                Err(RecvTimeoutError::Disconnected) => {
                    self.close();
                    return;
                }
            }
            while batch.len() < MAX_BATCH {
                match commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            let mut events = Vec::with_capacity(batch.len());
            let mut acks = Vec::with_capacity(batch.len());
            let mut close = None;
            for command in batch.drain(..) {
                match command {
                    Command::Record(event, ack) => {
                        events.push(event);
                        acks.extend(ack);
                    }
                    Command::Close(done) => close = Some(done),
                }
            }
            let written = if events.is_empty() {
                Ok(())
            } else {
                self.append(events)
            };
            for ack in acks {
                let _ = ack.send(written.clone());
            }
            if let Some(done) = close {
                self.close();
                let _ = done.send(());
                return;
            }
            if written.is_ok() {
                self.checkpoint_if_due();
                self.rotate_if_due();
            }
        }
    }

    /// Seals and writes `events` as one batch. On failure nothing of the batch counts: the
    /// chain and the file are rolled back to where they were.
    fn append(&mut self, events: Vec<Event>) -> Result<(), String> {
        let (seq, prev, len) = (self.seq, self.prev.clone(), self.len);
        let mut lines = Vec::with_capacity(events.len() * 256);
        for event in events {
            let value = serde_json::to_value(&event).unwrap_or(Value::Null);
            let sealed = record::seal(value, self.seq, &self.prev, now_ms());
            self.prev = record::hash(&sealed);
            self.seq += 1;
            lines.extend_from_slice(record::canonical(&sealed).as_bytes());
            lines.push(b'\n');
        }
        let count = self.seq - seq;
        let started = Instant::now();
        let written = self.write(&lines);
        if let Some(metrics) = &self.config.metrics {
            metrics
                .audit_write_seconds
                .observe(started.elapsed().as_secs_f64());
            if written.is_err() {
                metrics.audit_write_failures.inc();
            }
        }
        match written {
            Ok(()) => {
                self.len += lines.len() as u64;
                self.since_checkpoint += count;
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::warn!(path = %self.config.path.display(), "audit log writable again");
                }
                Ok(())
            }
            Err(e) => {
                self.seq = seq;
                self.prev = prev;
                if let Some(file) = self.file.take() {
                    let _ = file.set_len(len);
                }
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(path = %self.config.path.display(), error = %e, "audit log write failed");
                }
                Err(e.to_string())
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            self.file = Some(open_append(&self.config.path)?);
        }
        let file = self.file.as_mut().expect("opened above");
        file.write_all(bytes)?;
        if self.config.fsync {
            file.sync_data()?;
        }
        Ok(())
    }

    fn checkpoint_if_due(&mut self) {
        if self.since_checkpoint > 0
            && self.last_checkpoint.elapsed() >= self.config.checkpoint_interval
        {
            self.checkpoint();
        }
    }

    /// Signs the chain's current end, into the log and into the head file.
    fn checkpoint(&mut self) {
        let Some(key) = self.config.key.clone() else {
            self.since_checkpoint = 0;
            self.last_checkpoint = Instant::now();
            return;
        };
        let covers_seq = self.seq.saturating_sub(1);
        let covers_hash = self.prev.clone();
        let signature = record::hex(&key.sign(&checkpoint_message(covers_seq, &covers_hash)));
        let event = Event::Checkpoint {
            covers_seq,
            covers_hash,
            key: record::hex(key.public_key()),
            signature,
        };
        let head = serde_json::to_value(&event).unwrap_or(Value::Null);
        if self.append(vec![event]).is_err() {
            return;
        }
        let head_path = files::head_path(&self.config.path);
        let tmp = head_path.with_extension("head.tmp");
        let written = std::fs::write(&tmp, record::canonical(&head) + "\n")
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
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
    }

    fn rotate_if_due(&mut self) {
        let by_size = self.config.rotate_bytes > 0 && self.len >= self.config.rotate_bytes;
        let by_age = self
            .config
            .rotate_interval
            .is_some_and(|every| !every.is_zero() && self.opened.elapsed() >= every);
        if !(by_size || by_age) || self.len == 0 {
            return;
        }
        self.checkpoint();
        let rotated = files::rotated_path(&self.config.path, self.file_first_seq);
        self.file = None;
        match std::fs::rename(&self.config.path, &rotated) {
            Ok(()) => {
                tracing::info!(to = %rotated.display(), "audit log rotated");
                self.len = 0;
                self.file_first_seq = self.seq;
                self.opened = Instant::now();
            }
            Err(e) => tracing::error!(error = %e, "audit log rotation failed"),
        }
    }

    fn close(&mut self) {
        if self.append(vec![Event::AuditClose {}]).is_ok() {
            self.checkpoint();
        }
        if let Some(file) = &self.file {
            let _ = file.sync_all();
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
