//! The demo, as a newcomer meets it: every command it prints works when pasted into a shell, the
//! approver page answers at the printed URL, and closing the terminal (SIGHUP) stops it, its
//! clients told why, and removes its files.

use std::time::Duration;

use sluice_integration_tests::mcp::McpClient;
use sluice_integration_tests::{client_binary, sluice_binary};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The indented lines the demo prints: what it tells the user to paste.
fn pasteable(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|line| line.strip_prefix("  "))
        .map(str::trim)
        .filter(|line| {
            ["export ", "psql ", "sluice "]
                .iter()
                .any(|p| line.starts_with(p))
        })
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_command_the_demo_prints_works_when_pasted() {
    let mut demo = tokio::process::Command::new(sluice_binary())
        .args(["demo", "--plugins", env!("SLUICE_TEST_PLUGINS")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("sluice demo starts");
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if line.contains("Press Ctrl-C") {
                return;
            }
        }
        panic!("the demo ended early:\n{printed}");
    })
    .await
    .expect("the demo is ready within two minutes");

    let commands = pasteable(&printed);
    let page = printed
        .split_whitespace()
        .find(|w| w.starts_with("http://") && w.ends_with("/approvals"))
        .expect("the approver page's URL");
    let config = printed
        .split_whitespace()
        .skip_while(|w| *w != "--config")
        .nth(1)
        .expect("a config path")
        .to_owned();
    // One shell session, as a user pastes them: the exports hold for the commands after them.
    // The interactive psql line gets a statement; `<id>` placeholders are skipped.
    let mut script = String::from("set -e\n");
    for command in &commands {
        if command.contains("<id>") {
            continue;
        }
        if command.starts_with("psql ") {
            script.push_str(&format!(
                "{command} -X -At -c 'SELECT email FROM customers ORDER BY id LIMIT 1'\n"
            ));
        } else {
            script.push_str(command);
            script.push('\n');
        }
    }
    let psql_dir = client_binary("psql")
        .parent()
        .unwrap()
        .display()
        .to_string();
    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env(
            "PATH",
            format!("{psql_dir}:{}", std::env::var("PATH").unwrap_or_default()),
        )
        .env_remove("PGPASSWORD")
        .env_remove("SLUICE_TOKEN")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("h:")),
        "psql got a masked email: {stdout}"
    );
    for expected in [
        "psql ",
        "sluice approvals list",
        "sluice audit verify",
        "sluice token mint",
    ] {
        assert!(
            commands.iter().any(|c| c.starts_with(expected)),
            "the demo prints {expected}: {commands:?}"
        );
    }

    // The MCP configuration it prints works in a real MCP client, with the same guard.
    let start = printed.find("\n  {\n").expect("an MCP configuration") + 1;
    let end = start + printed[start..].find("\n  }\n").expect("its end") + 4;
    let mcp: serde_json::Value =
        serde_json::from_str(&printed[start..end]).expect("the MCP configuration is JSON");
    let server = &mcp["mcpServers"]["sluice"];
    let bearer = server["headers"]["Authorization"].as_str().unwrap();
    let mut client = McpClient::connect_url(
        server["url"].as_str().unwrap(),
        bearer.strip_prefix("Bearer ").unwrap(),
    )
    .await;
    let first = client
        .call(
            "query",
            serde_json::json!({"sql": "SELECT email FROM customers ORDER BY id LIMIT 1"}),
        )
        .await;
    let email = first["structuredContent"]["rows"][0]["email"].as_str();
    assert!(
        email.is_some_and(|e| e.starts_with("h:")),
        "MCP got a masked email: {first}"
    );
    client.close().await;

    let address = page
        .trim_start_matches("http://")
        .trim_end_matches("/approvals")
        .parse()
        .unwrap();
    let (code, body) =
        sluice_integration_tests::http(address, "GET", "/approvals", None, None).await;
    assert_eq!(code, 200);
    assert!(body.contains("Approver token"), "{body}");

    // The terminal closes.
    let pid = demo.id().unwrap() as i32;
    unsafe {
        libc::kill(pid, libc::SIGHUP);
    }
    let status = tokio::time::timeout(Duration::from_secs(30), demo.wait())
        .await
        .expect("the demo stops on SIGHUP")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        !std::path::Path::new(&config).exists(),
        "the demo's files are removed: {config}"
    );
}
