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
            // Build the stock (Rust) plugins, then run `sluice demo` with them loaded.
            let out = xtask::repo_root().join("target").join("demo-plugins");
            if let Err(e) = xtask::build_rust_plugins(&out) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = std::process::Command::new(cargo)
                .args([
                    "run",
                    "--release",
                    "--quiet",
                    "-p",
                    "sluice",
                    "--",
                    "demo",
                    "--plugins",
                ])
                .arg(&out)
                .args(rest)
                .status();
            match status {
                Ok(s) if s.success() => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            }
        }
        _ => {
            eprintln!("usage: cargo xtask plugins --out DIR | cargo xtask demo [--port N]");
            ExitCode::FAILURE
        }
    }
}
