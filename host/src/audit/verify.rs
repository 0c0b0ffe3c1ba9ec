//! `sluice audit verify`: walks the chain through every file and reports where it breaks.
//!
//! - an edited record no longer hashes to the next record's `prev`;
//! - a deleted record leaves a gap in `seq`;
//! - an inserted or moved record repeats or reverses `seq`, or breaks `prev`;
//! - a truncated log ends before the seq its signed head (or a later file) covers;
//! - a forged checkpoint fails its Ed25519 signature.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::event::checkpoint_message;
use super::record;

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based; 0 for the file as a whole.
    pub line: u64,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.what)
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub checkpoints: u64,
    /// Whether checkpoint signatures were checked against a key the caller trusts.
    pub signatures_verified: bool,
    pub problems: Vec<Problem>,
    /// Not tampering, but worth knowing (an unclean stop, records after the last checkpoint).
    pub notes: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

struct Walk<'a> {
    report: Report,
    key: Option<&'a [u8]>,
    /// seq and hash of the previous record, and where it was.
    previous: Option<(u64, String, PathBuf, u64)>,
    /// Hashes of the records the head covers, to compare at the end.
    wanted: HashMap<u64, String>,
    seen_wanted: HashMap<u64, String>,
    since_checkpoint: u64,
    last_type: String,
}

/// Verifies `files` (in any order: they are put in chain order by their first record) and,
/// if given, the signed `head` file. `key` is the trusted Ed25519 public key for checkpoint
/// signatures.
pub fn verify(files: &[PathBuf], head: Option<&Path>, key: Option<&[u8]>) -> Report {
    let mut walk = Walk {
        report: Report {
            signatures_verified: key.is_some(),
            ..Report::default()
        },
        key,
        previous: None,
        wanted: HashMap::new(),
        seen_wanted: HashMap::new(),
        since_checkpoint: 0,
        last_type: String::new(),
    };
    let head_record = head.and_then(|path| walk.read_head(path));
    let mut ordered: Vec<(u64, &PathBuf)> = files
        .iter()
        .map(|f| (first_seq(f).unwrap_or(u64::MAX), f))
        .collect();
    ordered.sort();
    for (_, file) in ordered {
        walk.file(file);
    }
    if let Some((head_path, covers_seq, covers_hash)) = head_record {
        let given_from = walk.report.first_seq.unwrap_or(0);
        match walk.seen_wanted.get(&covers_seq) {
            // The files given start after what the head covers: nothing to compare.
            None if covers_seq < given_from => walk.report.notes.push(format!(
                "the signed head covers seq {covers_seq}, before the first record given (seq {given_from}): give the earlier files to check it"
            )),
            Some(hash) if *hash == covers_hash => {}
            Some(_) => walk.problem(
                &head_path,
                0,
                format!("record {covers_seq}, which the signed head covers, was edited"),
            ),
            None => walk.problem(
                &head_path,
                0,
                format!(
                    "the log ends at seq {} but the signed head covers seq {covers_seq}: truncated",
                    walk.report
                        .last_seq
                        .map_or("(none)".into(), |s| s.to_string())
                ),
            ),
        }
    }
    if walk.report.records > 0 && walk.last_type != "audit_close" {
        walk.report.notes.push(
            "the log does not end with audit_close: the gateway is running or stopped uncleanly"
                .into(),
        );
    }
    if walk.since_checkpoint > 0 {
        walk.report.notes.push(format!(
            "{} records after the last signed checkpoint (an edit of the very last of them is only caught by the next checkpoint)",
            walk.since_checkpoint
        ));
    }
    if key.is_none() {
        walk.report.notes.push(
            "checkpoint signatures not checked against a trusted key (give --key or --config)"
                .into(),
        );
    }
    walk.report
}

fn first_seq(file: &Path) -> Option<u64> {
    let file = std::fs::File::open(file).ok()?;
    let mut line = String::new();
    std::io::BufReader::new(file).read_line(&mut line).ok()?;
    serde_json::from_str::<Value>(&line).ok()?["seq"].as_u64()
}

impl Walk<'_> {
    fn problem(&mut self, file: &Path, line: u64, what: String) {
        self.report.problems.push(Problem {
            file: file.to_owned(),
            line,
            what,
        });
    }

    fn read_head(&mut self, path: &Path) -> Option<(PathBuf, u64, String)> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                self.problem(path, 0, format!("cannot read the head: {e}"));
                return None;
            }
        };
        let Ok(head) = serde_json::from_str::<Value>(&text) else {
            self.problem(path, 1, "the head is not JSON".into());
            return None;
        };
        let covers_seq = head["covers_seq"].as_u64()?;
        let covers_hash = head["covers_hash"].as_str()?.to_owned();
        if !self.signature_ok(&head) {
            self.problem(
                path,
                1,
                "the head's signature does not verify: forged".into(),
            );
        }
        self.wanted.insert(covers_seq, covers_hash.clone());
        Some((path.to_owned(), covers_seq, covers_hash))
    }

    fn signature_ok(&self, checkpoint: &Value) -> bool {
        let (Some(seq), Some(hash), Some(signature)) = (
            checkpoint["covers_seq"].as_u64(),
            checkpoint["covers_hash"].as_str(),
            checkpoint["signature"].as_str().and_then(unhex),
        ) else {
            return false;
        };
        let embedded = checkpoint["key"].as_str().and_then(unhex);
        let key = match (self.key, &embedded) {
            (Some(trusted), _) => trusted.to_vec(),
            (None, Some(embedded)) => embedded.clone(),
            (None, None) => return false,
        };
        crate::identity::verify_signature(&key, &checkpoint_message(seq, hash), &signature)
    }

    fn file(&mut self, path: &Path) {
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) => return self.problem(path, 0, format!("cannot read: {e}")),
        };
        let mut reader = std::io::BufReader::new(file);
        let mut bytes = Vec::new();
        let mut number = 0;
        loop {
            bytes.clear();
            match reader.read_until(b'\n', &mut bytes) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return self.problem(path, number, format!("cannot read: {e}")),
            }
            number += 1;
            if bytes.last() != Some(&b'\n') {
                self.problem(path, number, "the last line is cut off: truncated".into());
                break;
            }
            let line = &bytes[..bytes.len() - 1];
            match serde_json::from_slice::<Value>(line) {
                Ok(value) => self.record(path, number, value, record::line_hash(line)),
                Err(e) => self.problem(path, number, format!("not a JSON record ({e}): edited")),
            }
        }
    }

    fn record(&mut self, path: &Path, line: u64, value: Value, hash: String) {
        let Some(seq) = value["seq"].as_u64() else {
            return self.problem(path, line, "record without seq: edited or inserted".into());
        };
        let prev = value["prev"].as_str().unwrap_or_default().to_owned();
        self.report.records += 1;
        self.report.first_seq.get_or_insert(seq);
        match &self.previous {
            None if seq == 0 && prev != record::GENESIS => self.problem(
                path,
                line,
                "the first record does not start the chain: edited".into(),
            ),
            None if seq > 0 => self.report.notes.push(format!(
                "the chain starts at seq {seq}: earlier files were not given"
            )),
            None => {}
            Some((last_seq, last_hash, last_file, last_line)) => {
                let (last_seq, last_hash) = (*last_seq, last_hash.clone());
                let at = format!("{}:{last_line}", last_file.display());
                if seq > last_seq + 1 {
                    self.problem(
                        path,
                        line,
                        format!(
                            "seq {seq} follows seq {last_seq} ({at}): records {}..{} are missing (deleted or truncated)",
                            last_seq + 1,
                            seq - 1
                        ),
                    );
                } else if seq <= last_seq {
                    self.problem(
                        path,
                        line,
                        format!("seq {seq} follows seq {last_seq} ({at}): inserted or reordered"),
                    );
                } else if prev != last_hash {
                    self.problem(
                        path,
                        line,
                        format!(
                            "prev does not match the hash of seq {last_seq} ({at}): that record was edited, or this one was"
                        ),
                    );
                }
            }
        }
        if self.wanted.contains_key(&seq) {
            self.seen_wanted.insert(seq, hash.clone());
        }
        let kind = value["type"].as_str().unwrap_or_default().to_owned();
        if kind == "checkpoint" {
            self.report.checkpoints += 1;
            self.since_checkpoint = 0;
            let covers = value["covers_seq"].as_u64();
            let covers_hash = value["covers_hash"].as_str().unwrap_or_default();
            let chained = matches!(&self.previous, Some((s, h, ..)) if Some(*s) == covers && h == covers_hash);
            if !chained {
                self.problem(
                    path,
                    line,
                    "checkpoint does not cover the record before it: edited or moved".into(),
                );
            }
            if !self.signature_ok(&value) {
                self.problem(
                    path,
                    line,
                    "checkpoint signature does not verify: forged".into(),
                );
            }
        } else {
            self.since_checkpoint += 1;
        }
        if kind == "audit_open" && value["unclean"] == Value::Bool(true) {
            self.report.notes.push(format!(
                "{}:{line}: the run before seq {seq} stopped uncleanly",
                path.display()
            ));
        }
        self.last_type = kind;
        self.report.last_seq = Some(seq);
        self.previous = Some((seq, hash, path.to_owned(), line));
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
