//! Builds the plugins in `plugins/` as WebAssembly components. Shared by `cargo xtask plugins`
//! and the integration tests' build script, so both build them the same way.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (this crate lives in `<root>/xtask`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Builds every plugin in `plugins/` — Rust crates and Python apps — to `out/<name>.wasm`.
/// Returns the paths written.
pub fn build_plugins(out: &Path) -> Result<Vec<PathBuf>, String> {
    let mut written = build_rust_plugins(out)?;
    written.extend(build_python_plugins(out)?);
    Ok(written)
}

/// Builds the Rust plugins for wasm32-wasip2 (release) and copies each to `out/<name>.wasm`.
pub fn build_rust_plugins(out: &Path) -> Result<Vec<PathBuf>, String> {
    build_rust_plugins_showing(out, false)
}

/// [`build_rust_plugins`], with cargo's progress on the terminal when `visible` (the demo's
/// first build takes minutes; a silent one looks hung).
pub fn build_rust_plugins_showing(out: &Path, visible: bool) -> Result<Vec<PathBuf>, String> {
    let root = repo_root();
    let plugins = root.join("plugins");
    let target_dir = root.join("target").join("plugins");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // A build script's environment describes the outer build (its target, its flags); none of
    // it applies to the plugins.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        command.env_remove(var);
    }
    if visible {
        command.stderr(std::process::Stdio::inherit());
    }
    let output = command
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        let stderr = if visible {
            "(cargo's output is above)".into()
        } else {
            String::from_utf8_lossy(&output.stderr)
        };
        let hint =
            if stderr.contains("wasm32-wasip2") && stderr.contains("target may not be installed") {
                "\nhint: rustup target add wasm32-wasip2"
            } else {
                ""
            };
        return Err(format!("building plugins failed:\n{stderr}{hint}"));
    }
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let built = target_dir.join("wasm32-wasip2").join("release");
    let mut written = Vec::new();
    for name in plugin_names(&plugins)? {
        let artifact = built.join(format!("{}.wasm", name.replace('-', "_")));
        let dest = out.join(format!("{name}.wasm"));
        std::fs::copy(&artifact, &dest)
            .map_err(|e| format!("cannot copy {}: {e}", artifact.display()))?;
        written.push(dest);
    }
    Ok(written)
}

/// Plugin crates: the directories of `plugins/` holding a Cargo.toml.
pub fn plugin_names(plugins: &Path) -> Result<Vec<String>, String> {
    directories_holding(plugins, "Cargo.toml")
}

/// The names of the directories of `plugins` that hold a file called `marker`, sorted.
fn directories_holding(plugins: &Path, marker: &str) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = std::fs::read_dir(plugins)
        .map_err(|e| format!("cannot read {}: {e}", plugins.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(marker).is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Python plugins: the directories of `plugins/` holding an `app.py`.
pub fn python_plugin_names(plugins: &Path) -> Result<Vec<String>, String> {
    directories_holding(plugins, "app.py")
}

/// Builds each Python plugin with componentize-py (`policy-plugin` world) and copies it to
/// `out/<name>.wasm`. A build takes most of a minute, so the component is kept in
/// `target/plugins/python` and rebuilt only when its sources or the contract are newer.
pub fn build_python_plugins(out: &Path) -> Result<Vec<PathBuf>, String> {
    let root = repo_root();
    let plugins = root.join("plugins");
    let names = python_plugin_names(&plugins)?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let built = root.join("target").join("plugins").join("python");
    std::fs::create_dir_all(&built)
        .and_then(|_| std::fs::create_dir_all(out))
        .map_err(|e| format!("cannot create plugin output directories: {e}"))?;
    let tool = std::env::var_os("COMPONENTIZE_PY").unwrap_or_else(|| "componentize-py".into());
    let wit = root.join("wit");
    let mut written = Vec::new();
    for name in names {
        let source = plugins.join(&name);
        let artifact = built.join(format!("{name}.wasm"));
        if !is_newer_than_sources(&artifact, &[&source, &wit]) {
            let partial = artifact.with_extension("partial");
            let output = Command::new(&tool)
                .arg("-d")
                .arg(&wit)
                .args([
                    "-w",
                    "sluice:plugin/policy-plugin@0.1.3",
                    "componentize",
                    "-p",
                ])
                .arg(&source)
                .args(["app", "-o"])
                .arg(&partial)
                .output()
                .map_err(|e| {
                    format!(
                        "cannot run {} to build the Python plugin {name}: {e}\n\
                         hint: pip install componentize-py",
                        tool.to_string_lossy()
                    )
                })?;
            if !output.status.success() {
                return Err(format!(
                    "building the Python plugin {name} failed:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            std::fs::rename(&partial, &artifact)
                .map_err(|e| format!("cannot move {}: {e}", partial.display()))?;
        }
        let dest = out.join(format!("{name}.wasm"));
        std::fs::copy(&artifact, &dest)
            .map_err(|e| format!("cannot copy {}: {e}", artifact.display()))?;
        written.push(dest);
    }
    Ok(written)
}

/// Whether `artifact` exists and is newer than every file under `sources`.
fn is_newer_than_sources(artifact: &Path, sources: &[&Path]) -> bool {
    fn newest(path: &Path) -> Option<std::time::SystemTime> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_dir() {
            return meta.modified().ok();
        }
        std::fs::read_dir(path)
            .ok()?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name() != "__pycache__")
            .filter_map(|e| newest(&e.path()))
            .max()
    }
    let Some(built) = std::fs::metadata(artifact).and_then(|m| m.modified()).ok() else {
        return false;
    };
    sources
        .iter()
        .all(|s| newest(s).is_some_and(|changed| changed < built))
}
