//! Where a log lives on disk: the current file, rotated files beside it named
//! `<name>.<first seq, 20 digits>`, and the signed head `<name>.head`.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub fn head_path(log: &Path) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(".head");
    log.with_file_name(name)
}

pub fn rotated_path(log: &Path, first_seq: u64) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{first_seq:020}"));
    log.with_file_name(name)
}

/// The log's files in chain order: rotated ones by their first sequence number, then the
/// current one (if it exists).
pub fn chain_files(log: &Path) -> Vec<PathBuf> {
    let name = log
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = log
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut rotated: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let seq = file.strip_prefix(&name)?.strip_prefix('.')?;
            (seq.len() == 20 && seq.bytes().all(|b| b.is_ascii_digit()))
                .then(|| (seq.parse().ok(), e.path()))
                .and_then(|(s, p)| Some((s?, p)))
        })
        .collect();
    rotated.sort();
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    if log.is_file() {
        files.push(log.to_owned());
    }
    files
}

/// The last complete line of `file` (without its newline) and the length of the file up to
/// and including it; bytes after it are a torn write.
pub fn last_line(file: &mut std::fs::File) -> std::io::Result<Option<(Vec<u8>, u64)>> {
    let len = file.seek(SeekFrom::End(0))?;
    let mut window: u64 = 64 << 10;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::with_capacity((len - start) as usize);
        file.read_to_end(&mut tail)?;
        let Some(end) = tail.iter().rposition(|&b| b == b'\n') else {
            if start == 0 {
                return Ok(None);
            }
            window *= 4;
            continue;
        };
        match tail[..end].iter().rposition(|&b| b == b'\n') {
            Some(begin) => {
                return Ok(Some((
                    tail[begin + 1..end].to_vec(),
                    start + end as u64 + 1,
                )));
            }
            None if start == 0 => return Ok(Some((tail[..end].to_vec(), end as u64 + 1))),
            None => window *= 4,
        }
    }
}
