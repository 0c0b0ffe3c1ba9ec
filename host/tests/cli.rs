//! The `sluice` binary's command-line contract.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

fn write_config(dir: &Path, extra_identity: &str) -> std::path::PathBuf {
    let status = sluice()
        .args(["keys", "generate", "--out"])
        .arg(dir.join("signing.pem"))
        .status()
        .unwrap();
    assert!(status.success());
    let path = dir.join("sluice.toml");
    std::fs::write(
        &path,
        format!(
            r#"[server]
listen = "127.0.0.1:0"
data_dir = "./data"
[identity]
signing_key = "./signing.pem"
max_ttl = "1h"
{extra_identity}
[[upstream]]
database = "app"
url = "postgres://sluice_gw@127.0.0.1:1/app"
[admin]
listen = "127.0.0.1:0"
"#
        ),
    )
    .unwrap();
    path
}

#[test]
fn keys_generate_writes_an_owner_only_key_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let out = sluice()
        .args(["keys", "generate", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = sluice()
        .args(["keys", "generate", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert_eq!(std::fs::read_to_string(&key).unwrap(), text);
}

#[test]
fn token_mint_prints_only_a_jwt_with_the_documented_claims() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let out = sluice()
        .args(["token", "mint", "--config"])
        .arg(&config)
        .args([
            "--subject",
            "agent-7",
            "--database",
            "app",
            "--ttl",
            "10m",
            "--groups",
            "ops,oncall",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "stdout is the token alone: {stdout:?}"
    );
    let token = stdout.trim();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: serde_json::Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "EdDSA");
    let claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["iss"], "sluice");
    assert_eq!(claims["aud"], "sluice");
    assert_eq!(claims["sub"], "agent-7");
    assert_eq!(claims["db"], "app");
    assert_eq!(claims["groups"], serde_json::json!(["ops", "oncall"]));
    let iat = claims["iat"].as_u64().unwrap();
    assert_eq!(claims["nbf"].as_u64().unwrap(), iat);
    assert_eq!(claims["exp"].as_u64().unwrap(), iat + 600);
    assert!(!claims["jti"].as_str().unwrap().is_empty());
}

#[test]
fn token_mint_refuses_ttl_above_max_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let out = sluice()
        .args(["token", "mint", "--config"])
        .arg(&config)
        .args(["--subject", "a", "--database", "app", "--ttl", "2h"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max_ttl"), "{stderr}");
}

#[test]
fn serve_with_a_bad_config_names_file_and_key_and_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "max_ttl_typo = \"1h\"");
    let out = sluice()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sluice.toml"), "{stderr}");
    assert!(stderr.contains("max_ttl_typo"), "{stderr}");
}

#[test]
fn serve_with_a_missing_upstream_secret_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("url = ", "password_env = \"SLUICE_TEST_UNSET_VAR\"\nurl = ");
    std::fs::write(&config, text).unwrap();
    let out = sluice()
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("SLUICE_TEST_UNSET_VAR")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("upstream[0].password_env"), "{stderr}");
}

#[test]
fn serve_answers_health_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut child = sluice()
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Readiness from the log, not a sleep: the admin listener logs its bound address.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let admin_addr = loop {
        let line = lines.next().expect("serve exited early").unwrap();
        if line.contains("admin listener up") {
            let addr = line.rsplit("local=").next().unwrap().trim().to_owned();
            break addr;
        }
    };
    let mut http = std::net::TcpStream::connect(&admin_addr).unwrap();
    http.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    http.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok\n"), "{response}");

    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
}

#[test]
fn init_writes_a_starter_config_that_loads_and_mints_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("gw");
    let out = sluice().arg("init").arg(&target).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = target.join("sluice.toml");
    assert!(String::from_utf8_lossy(&out.stdout).contains("sluice serve --config"));
    sluice::config::Config::load(&config).expect("the starter config loads");
    let mode = std::fs::metadata(target.join("signing.pem"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let token = sluice()
        .args(["token", "mint", "--config"])
        .arg(&config)
        .args(["--subject", "agent-7", "--database", "app", "--ttl", "5m"])
        .output()
        .unwrap();
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let again = sluice().arg("init").arg(&target).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwrites"));
}
