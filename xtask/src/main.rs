//! `cargo xtask plugins --out DIR`
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["plugins", "--out", out] => match xtask::build_plugins(&PathBuf::from(out)) {
            Ok(written) => {
                for path in written {
                    println!("{}", path.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        ["demo", rest @ ..] => {
            // The gateway is built in the test profile's own (dev) build, which
            // `cargo test --workspace` then reuses; its dependencies are optimised anyway.
            eprintln!(
                "Building the stock plugins and the gateway. The first build takes about five \
                 minutes on two cores (cargo's progress follows); later ones take seconds, and \
                 `cargo test --workspace` reuses it."
            );
            let out = xtask::repo_root().join("target").join("demo-plugins");
            if let Err(e) = xtask::build_rust_plugins_showing(&out, true) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let built = std::process::Command::new(cargo)
                .args(["build", "-p", "sluice", "--bin", "sluice"])
                .current_dir(xtask::repo_root())
                .status();
            if !matches!(built, Ok(s) if s.success()) {
                return ExitCode::FAILURE;
            }
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| xtask::repo_root().join("target"));
            // Replaces this process: Ctrl-C and a closing terminal reach the demo itself,
            // which cleans up.
            use std::os::unix::process::CommandExt;
            let error = std::process::Command::new(target.join("debug").join("sluice"))
                .args(["demo", "--plugins"])
                .arg(&out)
                .args(rest)
                .exec();
            eprintln!("error: cannot run the demo: {error}");
            ExitCode::FAILURE
        }
        _ => {
            eprintln!("usage: cargo xtask plugins --out DIR | cargo xtask demo [--port N]");
            ExitCode::FAILURE
        }
    }
}
