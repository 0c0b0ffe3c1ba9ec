//! A real MCP client for the tests: the official TypeScript SDK's `Client` over Streamable
//! HTTP (`integration-tests/mcp/client.mjs`), driven line by line: commands in on stdin,
//! answers and progress notifications out on stdout, as JSON.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// How long a test waits for one line from the client before failing.
const LINE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct McpClient {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// What `connect` answered: `connected`, `protocol_version`, `session`, or `connect_error`.
    pub hello: Value,
}

impl McpClient {
    /// Connects to the MCP server at `addr` (its `/mcp`) with `token` as the bearer.
    pub async fn connect(addr: std::net::SocketAddr, token: &str) -> McpClient {
        McpClient::connect_url(&format!("http://{addr}/mcp"), token).await
    }

    /// Connects to the MCP server at `url` with `token` as the bearer.
    pub async fn connect_url(url: &str, token: &str) -> McpClient {
        McpClient::connect_trusting(url, token, None).await
    }

    /// Connects to the MCP server at `url`, an `https` one trusting the certificate in the
    /// PEM file `ca`.
    pub async fn connect_trusting(url: &str, token: &str, ca: Option<&Path>) -> McpClient {
        let dir = crate::npm_installed("mcp", "@modelcontextprotocol/sdk").await;
        let mut command = tokio::process::Command::new("node");
        if let Some(ca) = ca {
            command.env("NODE_EXTRA_CA_CERTS", ca);
        }
        let mut child = command
            .arg(dir.join("client.mjs"))
            .arg(url)
            .arg(token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs: install Node.js (`apt-get install nodejs npm`)");
        let stdin = child.stdin.take().expect("piped");
        let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut client = McpClient {
            child,
            stdin,
            lines,
            hello: Value::Null,
        };
        client.hello = client.next().await;
        client
    }

    /// The client's next line.
    pub async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(LINE_TIMEOUT, self.lines.next_line())
            .await
            .expect("the MCP client answers in time")
            .expect("the MCP client's output is readable")
            .expect("the MCP client is still running");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"))
    }

    async fn send(&mut self, command: Value) {
        let mut line = command.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("the MCP client reads commands");
    }

    /// `tools/list`: the tools as the server described them.
    pub async fn list_tools(&mut self) -> Vec<Value> {
        self.send(json!({"list": true})).await;
        let answer = self.next().await;
        answer["tools"].as_array().expect("a list of tools").clone()
    }

    /// Starts `tools/call` of `tool` under `id` without waiting for it.
    pub async fn start_call(&mut self, id: &str, tool: &str, args: Value) {
        self.send(json!({"call": tool, "args": args, "id": id}))
            .await;
    }

    /// Cancels the call started under `id`: the SDK sends `notifications/cancelled` and
    /// answers the call with an error.
    pub async fn cancel(&mut self, id: &str) {
        self.send(json!({"cancel": id})).await;
    }

    /// `tools/call` of `tool`, waited for: the tool result (`content`, `structuredContent`,
    /// `isError`), or `{"error": ...}` for a protocol error.
    pub async fn call(&mut self, tool: &str, args: Value) -> Value {
        self.start_call(tool, tool, args).await;
        self.answer(tool).await
    }

    /// The answer to the call started under `id` (progress lines before it are skipped).
    pub async fn answer(&mut self, id: &str) -> Value {
        loop {
            let line = self.next().await;
            if line["id"] == id && line.get("progress").is_none() {
                return match line.get("result") {
                    Some(result) => result.clone(),
                    None => json!({"error": line["error"], "code": line["code"]}),
                };
            }
        }
    }

    /// Ends the MCP session (an HTTP DELETE, as the SDK ends one) and waits for the client.
    pub async fn close(mut self) {
        self.send(json!({"close": true})).await;
        let closed = self.next().await;
        assert_eq!(closed["closed"], true, "{closed}");
        let _ = self.child.wait().await;
    }
}

/// The text a tool result carries (its first content block).
pub fn text(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Runs `calls` (`[tool, arguments]`) in order with the official Python SDK's `Client`, which
/// speaks the current specification (2026-07-28, no protocol sessions), against the MCP
/// server at `addr`: the negotiated version and each call's result. A missing SDK fails with
/// how to install it.
pub async fn current_spec_calls(addr: std::net::SocketAddr, token: &str, calls: Value) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp/current_spec_client.py");
    let have = tokio::process::Command::new("python3")
        .args(["-c", "import mcp.client.client"])
        .output()
        .await
        .expect("python3 runs: install Python 3");
    assert!(
        have.status.success(),
        "the official Python MCP SDK is missing: pip install 'mcp==2.3.0'"
    );
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(format!("http://{addr}/mcp"))
        .arg(token)
        .arg(calls.to_string())
        .kill_on_drop(true)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the Python MCP client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the Python client prints JSON")
}
