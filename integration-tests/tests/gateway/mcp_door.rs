//! The MCP front door's door: bearer tokens and their 401 challenges with the resource
//! metadata, a trusted issuer's own token, MCP sessions owned by the token that opened them,
//! the number a token may hold, and HTTPS off loopback.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_integration_tests::idp::{TestIdp, TestKey};
use sluice_integration_tests::mcp::McpClient;
use sluice_integration_tests::{GatewayOptions, TestGateway};

use super::mcp::{fixtures, gateway, mcp};
use super::token_exchange::{AUD, github_claims, issuer_toml};

/// A raw HTTP request to the MCP listener: the status and the whole head.
async fn http_head(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String, String) {
    http_head_in(addr, method, path, token, None).await
}

/// As [`http_head`], in the MCP session `session`.
async fn http_head_in(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    session: Option<&str>,
) -> (u16, String, String) {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    http_request(addr, method, path, token, session, body).await
}

/// An HTTP/1.1 request with a JSON body (an `Authorization` scheme of `BEARER`: schemes are
/// case-insensitive) on a connection of its own.
async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    session: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
    );
    if let Some(token) = token {
        request.push_str(&format!("Authorization: BEARER {token}\r\n"));
    }
    if let Some(session) = session {
        request.push_str(&format!(
            "Mcp-Session-Id: {session}\r\nMcp-Protocol-Version: 2025-11-25\r\n"
        ));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

#[tokio::test]
async fn without_a_valid_token_the_answer_is_401_naming_the_resource_metadata() {
    let gw = gateway(Vec::new(), "").await;
    let addr = mcp(&gw);
    let metadata_url = format!("http://{addr}/.well-known/oauth-protected-resource");

    let mut expired = gw.claims("agent", Duration::from_secs(60));
    expired.exp = expired.iat - 10;
    let mut foreign = gw.claims("agent", Duration::from_secs(60));
    foreign.aud = "someone-else".into();
    for token in [
        None,
        Some("not-a-token".to_owned()),
        Some(gw.sign(&expired)),
        Some(gw.sign(&foreign)),
    ] {
        let (status, head, _) = http_head(addr, "POST", "/mcp", token.as_deref()).await;
        assert_eq!(status, 401, "{head}");
        let challenge = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("www-authenticate:"))
            .unwrap_or_else(|| panic!("no challenge in {head}"));
        assert!(
            challenge.contains(&format!("resource_metadata=\"{metadata_url}\"")),
            "{challenge}"
        );
    }

    let (status, _, body) = http_head(
        addr,
        "GET",
        "/.well-known/oauth-protected-resource/mcp",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let metadata: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(metadata["resource"], format!("http://{addr}/mcp"));
    assert_eq!(metadata["bearer_methods_supported"], json!(["header"]));

    // The SDK's client sees the refusal as one.
    let client = McpClient::connect(addr, "not-a-token").await;
    assert_eq!(client.hello["code"], 401, "{}", client.hello);

    // A token for another database than the one asked for is refused too.
    let (status, _, _) = http_head(
        addr,
        "POST",
        "/mcp?database=other",
        Some(&gw.token("agent")),
    )
    .await;
    assert_eq!(status, 401);

    // A refused token is a failed login in the audit log, as at the Postgres door.
    let failure = gw.audit_record("login_failure").await;
    assert_eq!(failure["via"], "mcp", "{failure}");
    assert!(failure["reason"].is_string());
}

#[tokio::test]
async fn a_person_whose_issuer_allows_direct_use_calls_tools_with_their_own_token() {
    fixtures().await;
    let (key, gh_key) = (TestKey::es256("people-1"), TestKey::rs256("gh-1"));
    let people = TestIdp::start("people", vec![key.clone()]).await;
    let github = TestIdp::start("github", vec![gh_key.clone()]).await;
    let gw = TestGateway::start_with(GatewayOptions {
        extra_toml: [
            issuer_toml(
                "people",
                &people,
                "oidc",
                "subjects = [\"dana\"]\ndatabases = [\"app\"]\ndirect_login = true",
            ),
            issuer_toml(
                "github",
                &github,
                "github-actions",
                "subjects = [\"*\"]\ndatabases = [\"app\"]",
            ),
        ]
        .concat(),
        mcp: true,
        ..GatewayOptions::default()
    })
    .await;
    let dana = key.sign(&people.claims(AUD, 300, json!({"sub": "dana"})));
    let mut client = McpClient::connect(mcp(&gw), &dana).await;
    let answer = client
        .call("query", json!({"sql": "SELECT 6 * 7 AS answer"}))
        .await;
    assert_eq!(
        answer["structuredContent"]["rows"][0]["answer"], 42,
        "{answer}"
    );
    let start = gw.audit_record("session_start").await;
    assert_eq!(start["subject"], "dana");
    assert_eq!(start["idp"], people.issuer.as_str());
    assert_eq!(start["via"], "mcp");
    client.close().await;

    // An issuer whose tokens are exchanged first: 401, saying so.
    let workflow = gh_key.sign(&github_claims(&github, "acme/reports", "refs/heads/main"));
    let (status, head, _) = http_head(mcp(&gw), "POST", "/mcp", Some(&workflow)).await;
    assert_eq!(status, 401);
    assert!(head.contains("exchanged first"), "{head}");
}

#[tokio::test]
async fn an_mcp_session_belongs_to_the_token_that_opened_it() {
    let gw = gateway(Vec::new(), "").await;
    let owner = gw.token("agent");
    let mut client = McpClient::connect(mcp(&gw), &owner).await;
    let session = client.hello["session"]
        .as_str()
        .expect("a session")
        .to_owned();
    client.call("query", json!({"sql": "BEGIN"})).await;

    // Another valid token naming it is told there is no such session; its owner is not.
    let other = gw.token("mallory");
    for method in ["POST", "GET", "DELETE"] {
        let (status, head, _) =
            http_head_in(mcp(&gw), method, "/mcp", Some(&other), Some(&session)).await;
        assert_eq!(status, 404, "{method}: {head}");
    }
    let (status, head, _) =
        http_head_in(mcp(&gw), "POST", "/mcp", Some(&owner), Some(&session)).await;
    assert_ne!(status, 404, "{head}");
    // The owner's transaction is untouched.
    let still = client
        .call("query", json!({"sql": "SELECT 1 AS one"}))
        .await;
    assert_eq!(still["structuredContent"]["transaction"], "open", "{still}");
    client.close().await;
}

#[tokio::test]
async fn off_loopback_the_mcp_listener_serves_https_with_the_gateways_certificate() {
    fixtures().await;
    let port = sluice_integration_tests::free_port();
    let gw = TestGateway::start_with(GatewayOptions {
        mcp: true,
        mcp_listen: Some(std::net::SocketAddr::from(([0, 0, 0, 0], port))),
        extra_toml: format!("[mcp]\npublic_url = \"https://localhost:{port}\"\n"),
        ..GatewayOptions::default()
    })
    .await;
    let cert = gw.config_path.with_file_name("data").join("server.crt");
    assert!(cert.is_file(), "{}", cert.display());
    let url = format!("https://localhost:{port}/mcp");
    let mut client = McpClient::connect_trusting(&url, &gw.token("agent"), Some(&cert)).await;
    assert_eq!(client.hello["connected"], true, "{}", client.hello);
    let one = client
        .call("query", json!({"sql": "SELECT 1 AS one"}))
        .await;
    assert_eq!(one["structuredContent"]["rows"][0]["one"], 1, "{one}");
    client.close().await;
    // Plain HTTP is not served there.
    let plain =
        McpClient::connect_url(&format!("http://localhost:{port}/mcp"), &gw.token("agent")).await;
    assert!(plain.hello["connect_error"].is_string(), "{}", plain.hello);
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;

#[tokio::test]
async fn a_token_holds_a_bounded_number_of_mcp_sessions() {
    let gw = gateway(Vec::new(), "").await;
    let token = gw.token("agent");
    let mut opened = Vec::new();
    for _ in 0..16 {
        let (status, head, _) =
            http_request(mcp(&gw), "POST", "/mcp", Some(&token), None, INITIALIZE).await;
        assert_eq!(status, 200, "{head}");
        let id = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .starts_with("mcp-session-id:")
                    .then(|| l.split_once(':').unwrap().1.trim().to_owned())
            })
            .expect("a session id");
        opened.push(id);
    }
    let (status, head, _) =
        http_request(mcp(&gw), "POST", "/mcp", Some(&token), None, INITIALIZE).await;
    assert_eq!(status, 429, "{head}");
    // Another token is not held back by this one's.
    let (status, _, _) = http_request(
        mcp(&gw),
        "POST",
        "/mcp",
        Some(&gw.token("other")),
        None,
        INITIALIZE,
    )
    .await;
    assert_eq!(status, 200);
    // Ending one makes room.
    let (status, _, _) = http_request(
        mcp(&gw),
        "DELETE",
        "/mcp",
        Some(&token),
        Some(&opened[0]),
        "",
    )
    .await;
    assert!(status < 300, "{status}");
    let (status, _, _) =
        http_request(mcp(&gw), "POST", "/mcp", Some(&token), None, INITIALIZE).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = gateway(Vec::new(), "[mcp]\nmax_connections = 1\n").await;
    let addr = mcp(&gw);
    // One connection, sending nothing, holds the only place.
    let idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut waiting = tokio::net::TcpStream::connect(addr).await.unwrap();
    waiting
        .write_all(b"GET /.well-known/oauth-protected-resource HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let early =
        tokio::time::timeout(Duration::from_millis(300), waiting.read_to_end(&mut answer)).await;
    assert!(
        early.is_err(),
        "answered past the cap: {}",
        String::from_utf8_lossy(&answer)
    );
    drop(idle);
    tokio::time::timeout(Duration::from_secs(10), waiting.read_to_end(&mut answer))
        .await
        .expect("answered once the first connection closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}
