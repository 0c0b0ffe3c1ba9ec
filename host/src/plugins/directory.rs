//! Which files of the plugin directory may be loaded. Whoever can write there decides what
//! guards the database, so the directory is held to sshd's rule for `authorized_keys`: the
//! directory and every file loaded from it belong to the gateway's user (or root) and nobody
//! else may write them; a symbolic link may not lead out of the directory; and a plugin's name,
//! which reaches logs, the audit log and clients, is a plain word.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The rule for a plugin's name (the file name without `.wasm`) is the configuration's, so that
/// `plugins.required` and the directory agree.
pub use crate::config::valid_plugin_name as valid_name;

/// Why `meta` (of `what`) may not be trusted: owned by another user than the gateway's (or
/// root), or writable by its group or by anyone.
fn untrusted(what: &Path, meta: &std::fs::Metadata) -> Option<String> {
    // Safety: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Some(format!(
            "{} belongs to uid {}, not to the gateway's user (uid {me}) or root",
            what.display(),
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Some(format!(
            "{} is writable by others than its owner (mode {mode:04o}); run chmod go-w on it",
            what.display()
        ));
    }
    None
}

/// The directory itself, resolved: refused if it, or a directory above it, may be written by
/// others.
pub fn check_dir(dir: &Path) -> Result<PathBuf, String> {
    let resolved = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let meta = std::fs::metadata(&resolved).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if let Some(why) = untrusted(dir, &meta) {
        return Err(why);
    }
    // Whoever can rename a parent can put another directory in this one's place; a parent with
    // the sticky bit (`/tmp`) lets nobody rename what is not theirs.
    for parent in resolved.ancestors().skip(1) {
        let meta = std::fs::metadata(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        let sticky = meta.mode() & 0o1000 != 0;
        // Safety: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        match untrusted(parent, &meta) {
            Some(_) if sticky && (meta.uid() == 0 || meta.uid() == me) => {}
            Some(why) => return Err(format!("above the plugin directory, {why}")),
            None => {}
        }
    }
    Ok(resolved)
}

/// A file to be read from the directory (`resolved_dir`, from [`check_dir`]): refused if it is
/// a link leading out of the directory, not a regular file, or writable by others.
pub fn check_file(resolved_dir: &Path, file: &Path) -> Result<(), String> {
    let target = file
        .canonicalize()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    if target.parent() != Some(resolved_dir) {
        return Err(format!(
            "{} leads out of the plugin directory (to {})",
            file.display(),
            target.display()
        ));
    }
    let meta = std::fs::metadata(&target).map_err(|e| format!("{}: {e}", file.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", file.display()));
    }
    match untrusted(file, &meta) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_plugin_name_is_a_plain_word() {
        for good in ["no-ddl", "approve_writes", "v2", "A-b_9"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            "-x",
            "a\nforged log line",
            "a b",
            "ünï",
            "a.b",
            "x\u{202E}",
            &"x".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn files_writable_by_others_or_leading_out_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("plugins");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let resolved = check_dir(&dir).unwrap();

        let good = dir.join("good.wasm");
        std::fs::write(&good, b"x").unwrap();
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(check_file(&resolved, &good), Ok(()));

        let open = dir.join("open.wasm");
        std::fs::write(&open, b"x").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
        let why = check_file(&resolved, &open).unwrap_err();
        assert!(
            why.contains("writable by others") && why.contains("0666"),
            "{why}"
        );

        let outside = root.path().join("elsewhere.wasm");
        std::fs::write(&outside, b"x").unwrap();
        let link = dir.join("link.wasm");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let why = check_file(&resolved, &link).unwrap_err();
        assert!(why.contains("leads out of the plugin directory"), "{why}");
        // A link to a file inside the directory is that file.
        let inside = dir.join("alias.wasm");
        std::os::unix::fs::symlink(&good, &inside).unwrap();
        assert_eq!(check_file(&resolved, &inside), Ok(()));

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let why = check_dir(&dir).unwrap_err();
        assert!(why.contains("writable by others"), "{why}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();

        // A parent others may write (without the sticky bit) could swap the directory.
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let why = check_dir(&dir).unwrap_err();
        assert!(why.contains("above the plugin directory"), "{why}");
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(check_dir(&dir).is_ok(), "a sticky parent, like /tmp");
    }
}
