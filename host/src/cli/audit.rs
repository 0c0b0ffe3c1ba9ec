//! `sluice audit verify FILE... | tail [--follow] [--subject S]`.

use std::io::{BufRead, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;

use sluice::audit::{chain_files, head_path, verify};
use sluice::config::Config;
use sluice::identity::SigningKey;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Checks the hash chain and signed checkpoints; reports every edit, deletion, insertion,
    /// reordering or truncation with the file and line. Exit status 1 if any.
    Verify {
        /// Log files (current and rotated, any order). Default: the log of --config.
        files: Vec<PathBuf>,
        /// The gateway config: its log files and its key for the signatures.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The signing key (PEM) whose public half must have signed the checkpoints.
        #[arg(long)]
        key: Option<PathBuf>,
        /// The signed head file (default: `<log>.head` beside the current file, if present).
        #[arg(long)]
        head: Option<PathBuf>,
    },
    /// Prints records, oldest first, optionally only one subject's, and keeps following: a
    /// line per record on a terminal, the JSON records with --json or into a pipe.
    Tail {
        /// The current log file. Default: the log of --config.
        file: Option<PathBuf>,
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only records about this subject (sessions, statements, approvals).
        #[arg(long)]
        subject: Option<String>,
        /// Keep printing records as they are written (across rotations).
        #[arg(long, short)]
        follow: bool,
        /// Start with the last N records instead of all of them.
        #[arg(long, short = 'n')]
        lines: Option<usize>,
        /// Print the records as they are (JSON Lines), also on a terminal.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify {
            files,
            config,
            key,
            head,
        } => verify_command(files, config, key, head),
        AuditCommand::Tail {
            file,
            config,
            subject,
            follow,
            lines,
            json,
        } => {
            use std::io::IsTerminal;
            let log = log_path(file, config.as_deref())?;
            let human = !json && std::io::stdout().is_terminal();
            tail(&log, subject.as_deref(), follow, lines, human).await
        }
    }
}

fn log_path(file: Option<PathBuf>, config: Option<&Path>) -> anyhow::Result<PathBuf> {
    match (file, config) {
        (Some(file), _) => Ok(file),
        (None, Some(config)) => Ok(Config::load(config)?.audit_path()),
        (None, None) => bail!("name the log file or give --config"),
    }
}

fn verify_command(
    files: Vec<PathBuf>,
    config: Option<PathBuf>,
    key: Option<PathBuf>,
    head: Option<PathBuf>,
) -> anyhow::Result<()> {
    let config = config.map(|c| Config::load(&c)).transpose()?;
    let files = if files.is_empty() {
        let Some(config) = &config else {
            bail!("name the log files or give --config");
        };
        chain_files(&config.audit_path())
    } else {
        files
    };
    if files.is_empty() {
        bail!("no audit log files found");
    }
    let key_path = key.or_else(|| config.as_ref().map(|c| c.identity.signing_key.clone()));
    let public = match &key_path {
        Some(path) => Some(
            SigningKey::load(path)
                .with_context(|| format!("loading the key {}", path.display()))?
                .public_key()
                .to_vec(),
        ),
        None => None,
    };
    // The head beside the newest file, unless named.
    let head = head.or_else(|| {
        files
            .iter()
            .find(|f| f.extension().is_none_or(|e| e.len() != 20))
            .map(|f| head_path(f))
            .filter(|h| h.is_file())
    });
    let report = verify::verify(&files, head.as_deref(), public.as_deref());
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    for problem in &report.problems {
        println!("TAMPERED {problem}");
    }
    let range = match (report.first_seq, report.last_seq) {
        (Some(a), Some(b)) => format!("seq {a}..{b}"),
        _ => "no records".into(),
    };
    if report.ok() {
        println!(
            "ok: {} records ({range}) in {} file(s), {} signed checkpoint(s){}",
            report.records,
            files.len(),
            report.checkpoints,
            if report.signatures_verified {
                ", signatures verified"
            } else {
                ""
            }
        );
        Ok(())
    } else {
        bail!(
            "the audit log was tampered with: {} problem(s)",
            report.problems.len()
        )
    }
}

fn about_subject(line: &str, subject: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line)
        .is_ok_and(|record| record["subject"].as_str() == Some(subject))
}

async fn tail(
    log: &Path,
    subject: Option<&str>,
    follow: bool,
    last: Option<usize>,
    human: bool,
) -> anyhow::Result<()> {
    let print = |line: &str| {
        if subject.is_none_or(|s| about_subject(line, s)) {
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(record) if human => println!("{}", super::audit_human::line(&record)),
                _ => println!("{line}"),
            }
        }
    };
    let mut backlog = Vec::new();
    for file in chain_files(log) {
        let reader = std::io::BufReader::new(
            std::fs::File::open(&file).with_context(|| format!("{}", file.display()))?,
        );
        for line in reader.lines() {
            backlog.push(line?);
        }
    }
    let skip = last.map_or(0, |n| backlog.len().saturating_sub(n));
    for line in &backlog[skip..] {
        print(line);
    }
    if !follow {
        return Ok(());
    }
    let mut offset = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
    let mut partial = String::new();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(len) = std::fs::metadata(log).map(|m| m.len()) else {
            continue;
        };
        if len < offset {
            // Rotated: the new current file starts over.
            offset = 0;
        }
        if len == offset {
            continue;
        }
        let mut file = std::fs::File::open(log)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut reader = std::io::BufReader::new(file);
        let mut chunk = String::new();
        offset += std::io::Read::read_to_string(&mut reader, &mut chunk)? as u64;
        partial.push_str(&chunk);
        while let Some(end) = partial.find('\n') {
            let line: String = partial.drain(..=end).collect();
            print(line.trim_end());
        }
    }
}
