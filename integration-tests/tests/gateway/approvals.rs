//! Statements a policy sends for approval are held on the live connection: the client gets a
//! notice with the request id at once, and the statement runs, fails or is withdrawn as
//! approvers (over the admin API), the clock or the client decide.

use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use sluice_integration_tests::{
    GatewayOptions, PluginSpec, RawClient, TestGateway, http, query_message, tags,
};

const WRITE: &str = "INSERT INTO items VALUES (5000, 'held')";

async fn gateway(approvals_toml: &str) -> TestGateway {
    TestGateway::start_with(GatewayOptions {
        plugins: vec![PluginSpec::stock("approve-writes")],
        extra_toml: format!("[approvals]\n{approvals_toml}\n"),
        ..GatewayOptions::default()
    })
    .await
}

/// Sends `sql`, expects the approval notice first and returns the request id.
async fn held(raw: &mut RawClient, sql: &str) -> String {
    raw.send(&query_message(sql)).await;
    notice_id(raw).await
}

/// Expects the approval notice of a statement already sent and returns the request id.
async fn notice_id(raw: &mut RawClient) -> String {
    let notice = raw.recv().await.expect("a notice");
    assert_eq!(notice.tag, b'N', "the notice comes first");
    assert_eq!(notice.sqlstate(), "00000");
    let text = notice.message();
    assert!(text.contains("required ("), "{text}");
    assert!(text.contains("waiting up to"), "{text}");
    text.split_whitespace()
        .find(|w| w.starts_with("apr-"))
        .expect("the notice names the request")
        .to_owned()
}

async fn vote(gw: &TestGateway, id: &str, approver: &str, verb: &str, body: &str) -> (u16, String) {
    let token = gw.token_with_groups(approver, &["approvers"]);
    http(
        gw.admin,
        "POST",
        &format!("/v1/approvals/{id}/{verb}"),
        Some(&token),
        Some(body),
    )
    .await
}

async fn status_of(gw: &TestGateway, id: &str) -> String {
    let view = gw.approval(id, "auditor", &["approvers"]).await;
    view["status"].as_str().unwrap().to_owned()
}

async fn count(gw: &TestGateway, id: i32) -> i64 {
    let client = gw.connect("reader", &gw.token("reader")).await.unwrap();
    client
        .query_one("SELECT count(*) FROM items WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_held_statement_runs_once_approved_and_not_before() {
    let gw = gateway("timeout = \"30s\"").await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let id = held(&mut raw, WRITE).await;
    assert_eq!(count(&gw, 5000).await, 0, "nothing runs while held");
    assert_eq!(status_of(&gw, &id).await, "pending");

    let (code, body) = vote(&gw, &id, "alice", "approve", r#"{"reason":"ok"}"#).await;
    assert_eq!(code, 200, "{body}");
    let reply = raw.until_ready().await;
    assert_eq!(tags(&reply), "CZ");
    assert_eq!(count(&gw, 5000).await, 1);
    assert_eq!(status_of(&gw, &id).await, "approved");

    // The approval covered that statement once: the same text again is held again.
    let again = held(&mut raw, "INSERT INTO items VALUES (5000, 'held')").await;
    assert_ne!(again, id);
}

#[tokio::test]
async fn a_denied_statement_fails_with_42501_naming_the_approver_and_the_session_goes_on() {
    let gw = gateway("timeout = \"30s\"").await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let id = held(&mut raw, "INSERT INTO items VALUES (5001, 'no')").await;
    let (code, _) = vote(&gw, &id, "bob", "deny", r#"{"reason":"not today"}"#).await;
    assert_eq!(code, 200);
    let reply = raw.until_ready().await;
    assert_eq!(tags(&reply), "EZ");
    assert_eq!(reply[0].sqlstate(), "42501");
    let text = reply[0].message();
    assert!(text.contains("denied by bob: not today"), "{text}");
    assert_eq!(count(&gw, 5001).await, 0);
    assert_eq!(
        tags(&raw.exchange(&query_message("SELECT 1")).await),
        "TDCZ"
    );
}

#[tokio::test]
async fn an_undecided_statement_expires_with_57014() {
    let gw = gateway("timeout = \"1s\"").await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let id = held(&mut raw, "INSERT INTO items VALUES (5002, 'late')").await;
    let reply = raw.until_ready().await;
    assert_eq!(tags(&reply), "EZ");
    assert_eq!(reply[0].sqlstate(), "57014");
    assert!(reply[0].message().contains("expired"));
    assert_eq!(status_of(&gw, &id).await, "expired");
    let (code, _) = vote(&gw, &id, "alice", "approve", "").await;
    assert_eq!(code, 409, "an expired request cannot be approved");
    assert_eq!(count(&gw, 5002).await, 0);
}

#[tokio::test]
async fn nobody_approves_their_own_request_and_only_approvers_vote() {
    let gw = gateway("timeout = \"30s\"").await;
    // The requester is even in the approver group.
    let token = gw.token_with_groups("agent", &["approvers"]);
    let mut raw = RawClient::connect(&gw, "agent", &token).await;
    let id = held(&mut raw, "INSERT INTO items VALUES (5003, 'self')").await;
    let (code, body) = vote(&gw, &id, "agent", "approve", "").await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("own"), "{body}");

    let outsider = gw.token_with_groups("mallory", &["agents"]);
    let path = format!("/v1/approvals/{id}/approve");
    let (code, _) = http(gw.admin, "POST", &path, Some(&outsider), None).await;
    assert_eq!(code, 403);
    let (code, _) = http(gw.admin, "POST", &path, None, None).await;
    assert_eq!(code, 401);
    let (code, _) = http(gw.admin, "POST", &path, Some("not.a.token"), None).await;
    assert_eq!(code, 401);
    assert_eq!(status_of(&gw, &id).await, "pending");
}

#[tokio::test]
async fn a_quorum_of_two_needs_two_distinct_approvers() {
    let gw = gateway("timeout = \"30s\"\napprovals_needed = 2").await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let id = held(&mut raw, "INSERT INTO items VALUES (5004, 'two')").await;
    assert_eq!(vote(&gw, &id, "alice", "approve", "").await.0, 200);
    assert_eq!(
        vote(&gw, &id, "alice", "approve", "").await.0,
        409,
        "no double vote"
    );
    assert_eq!(status_of(&gw, &id).await, "pending");
    assert_eq!(count(&gw, 5004).await, 0);
    assert_eq!(vote(&gw, &id, "bob", "approve", "").await.0, 200);
    assert_eq!(tags(&raw.until_ready().await), "CZ");
    assert_eq!(count(&gw, 5004).await, 1);
}

#[tokio::test]
async fn a_scoped_approval_lets_that_statement_shape_run_for_a_while() {
    let gw = gateway("timeout = \"30s\"").await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let id = held(&mut raw, "INSERT INTO items VALUES (5005, 'scoped')").await;
    let (code, body) = vote(&gw, &id, "alice", "approve", r#"{"scope_seconds":600}"#).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(tags(&raw.until_ready().await), "CZ");
    // Same fingerprint (constants differ): runs at once, and the client is told why.
    let reply = raw
        .exchange(&query_message("INSERT INTO items VALUES (5006, 'also')"))
        .await;
    let without_notices: String = tags(&reply).chars().filter(|t| *t != 'N').collect();
    assert_eq!(without_notices, "CZ");
    let notice = reply.iter().find(|m| m.tag == b'N').expect("a notice");
    assert_eq!(notice.sqlstate(), "00000");
    assert!(
        notice
            .message()
            .contains(&format!("scoped grant of approval {id}")),
        "{}",
        notice.message()
    );
    // Another statement still needs its own approval.
    held(&mut raw, "UPDATE items SET name = 'x' WHERE id = 5005").await;
}

#[tokio::test]
async fn a_scope_longer_than_any_time_lasts_until_the_end_of_9999() {
    let gw = gateway("timeout = \"30s\"").await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let id = held(&mut raw, "INSERT INTO items VALUES (5090, 'for good')").await;
    let scope = format!(r#"{{"scope_seconds":{}}}"#, u64::MAX);
    let (code, body) = vote(&gw, &id, "alice", "approve", &scope).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(tags(&raw.until_ready().await), "CZ");
    let reply = raw
        .exchange(&query_message("INSERT INTO items VALUES (5091, 'still')"))
        .await;
    let notice = reply.iter().find(|m| m.tag == b'N').expect("a notice");
    assert!(
        notice.message().contains("until 9999-12-31T23:59:59Z"),
        "{}",
        notice.message()
    );
    assert_eq!(count(&gw, 5091).await, 1);
}

#[tokio::test]
async fn a_client_that_leaves_or_cancels_withdraws_its_request() {
    let gw = gateway("timeout = \"30s\"").await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let id = held(&mut raw, "INSERT INTO items VALUES (5007, 'gone')").await;
    drop(raw);
    let mut status = String::new();
    for _ in 0..50 {
        status = status_of(&gw, &id).await;
        if status == "withdrawn" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "withdrawn");
    assert_eq!(vote(&gw, &id, "alice", "approve", "").await.0, 409);
    assert_eq!(count(&gw, 5007).await, 0);

    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let id = held(&mut raw, "INSERT INTO items VALUES (5008, 'cancelled')").await;
    raw.cancel(&gw).await;
    let reply = raw.until_ready().await;
    assert_eq!(tags(&reply), "EZ");
    assert_eq!(reply[0].sqlstate(), "57014");
    assert_eq!(status_of(&gw, &id).await, "withdrawn");
    assert_eq!(
        tags(&raw.exchange(&query_message("SELECT 1")).await),
        "TDCZ"
    );
}

#[tokio::test]
async fn a_held_statement_inside_a_transaction_commits_with_it() {
    let gw = gateway("timeout = \"30s\"").await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    assert_eq!(tags(&raw.exchange(&query_message("BEGIN")).await), "CZ");
    let id = held(&mut raw, "INSERT INTO items VALUES (5009, 'txn')").await;
    vote(&gw, &id, "alice", "approve", "").await;
    let reply = raw.until_ready().await;
    assert_eq!(tags(&reply), "CZ");
    assert_eq!(reply[1].body[0], b'T', "still in the transaction");
    assert_eq!(count(&gw, 5009).await, 0, "not visible before COMMIT");
    assert_eq!(tags(&raw.exchange(&query_message("COMMIT")).await), "CZ");
    assert_eq!(count(&gw, 5009).await, 1);
}

#[tokio::test]
async fn pipelined_messages_behind_a_held_one_wait_in_order() {
    let gw = gateway("timeout = \"30s\"").await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    // Extended protocol, the held write first, a read of its row behind it, one Sync.
    let mut out = BytesMut::new();
    frontend::parse("", "INSERT INTO items VALUES (5010, 'piped')", [], &mut out).unwrap();
    sluice_integration_tests::bind_and_execute(&mut out, &[]);
    frontend::parse("", "SELECT name FROM items WHERE id = 5010", [], &mut out).unwrap();
    sluice_integration_tests::bind_and_execute(&mut out, &[]);
    frontend::sync(&mut out);
    raw.send(&out).await;
    let id = notice_id(&mut raw).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    vote(&gw, &id, "alice", "approve", "").await;
    let reply = raw.until_ready().await;
    // Parse, Bind, Insert done; then the read sees the row.
    assert_eq!(tags(&reply), "12C12DCZ");
}

#[tokio::test]
async fn fifty_held_sessions_are_decided_in_one_burst() {
    let gw = gateway("timeout = \"60s\"").await;
    let mut sessions = Vec::new();
    for i in 0..50 {
        let mut raw =
            RawClient::connect(&gw, &format!("agent-{i}"), &gw.token(&format!("agent-{i}"))).await;
        let id = held(
            &mut raw,
            &format!("INSERT INTO items VALUES ({}, 'burst')", 6000 + i),
        )
        .await;
        sessions.push((raw, id));
    }
    let token = gw.token_with_groups("alice", &["approvers"]);
    let (code, body) = http(gw.admin, "GET", "/v1/approvals", Some(&token), None).await;
    assert_eq!(code, 200);
    let pending: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert!(pending.len() >= 50, "{} pending", pending.len());

    let votes = sessions
        .iter()
        .map(|(_, id)| vote(&gw, id, "alice", "approve", ""));
    for (code, body) in futures_util::future::join_all(votes).await {
        assert_eq!(code, 200, "{body}");
    }
    for (mut raw, _) in sessions {
        assert_eq!(tags(&raw.until_ready().await), "CZ");
    }
    let client = gw.connect("reader", &gw.token("reader")).await.unwrap();
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM items WHERE id BETWEEN 6000 AND 6049",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 50);
}

#[tokio::test]
async fn the_cli_lists_shows_and_approves_and_refuses_self_approval() {
    let gw = gateway("timeout = \"30s\"").await;
    let requester = gw.token_with_groups("agent", &["approvers"]);
    let mut raw = RawClient::connect(&gw, "agent", &requester).await;
    let id = held(&mut raw, "INSERT INTO items VALUES (5011, 'cli')").await;

    let alice = gw.token_with_groups("alice", &["approvers"]);
    let list = gw.approvals_cli(&alice, &["list"]).await;
    let out = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(out.contains(&id) && out.contains("agent@app"), "{out}");
    let show = gw.approvals_cli(&alice, &["show", &id]).await;
    let out = String::from_utf8_lossy(&show.stdout);
    assert!(
        out.contains("INSERT INTO items VALUES (5011, 'cli')"),
        "{out}"
    );
    assert!(out.contains("approve-writes"), "{out}");

    let own = gw.approvals_cli(&requester, &["approve", &id]).await;
    assert!(!own.status.success());
    let err = String::from_utf8_lossy(&own.stderr);
    assert!(err.contains("403") && err.contains("own"), "{err}");

    let approve = gw
        .approvals_cli(&alice, &["approve", &id, "--reason", "looks fine"])
        .await;
    assert!(
        approve.status.success(),
        "{}",
        String::from_utf8_lossy(&approve.stderr)
    );
    assert!(String::from_utf8_lossy(&approve.stdout).contains("approved"));
    assert_eq!(tags(&raw.until_ready().await), "CZ");
    assert_eq!(count(&gw, 5011).await, 1);
}

#[tokio::test]
async fn a_subject_with_too_many_statements_waiting_is_refused_53400() {
    let gw = gateway("timeout = \"30s\"\nmax_pending_per_subject = 2").await;
    let token = gw.token("agent");
    let mut first = RawClient::connect(&gw, "agent", &token).await;
    held(&mut first, "INSERT INTO items VALUES (5012, 'a')").await;
    let mut second = RawClient::connect(&gw, "agent", &token).await;
    held(&mut second, "INSERT INTO items VALUES (5013, 'b')").await;
    let mut third = RawClient::connect(&gw, "agent", &token).await;
    let reply = third
        .exchange(&query_message("INSERT INTO items VALUES (5014, 'c')"))
        .await;
    assert_eq!(tags(&reply), "EZ");
    assert_eq!(reply[0].sqlstate(), "53400");
    assert!(reply[0].message().contains("max_pending_per_subject"));
    // Another subject is not affected.
    let mut other = RawClient::connect(&gw, "other", &gw.token("other")).await;
    held(&mut other, "INSERT INTO items VALUES (5015, 'd')").await;
}

#[tokio::test]
async fn the_web_page_approves_a_real_held_statement_and_refuses_self_approval() {
    let gw = gateway("timeout = \"60s\"").await;
    let requester = gw.token_with_groups("agent", &["approvers"]);
    let mut raw = RawClient::connect(&gw, "agent", &requester).await;
    let id = held(&mut raw, "INSERT INTO items VALUES (5016, 'browser')").await;
    let page = format!("http://{}/approvals", gw.admin);

    let own = sluice_integration_tests::browser(&[&page, &requester, &id, "refused"]).await;
    assert!(
        own.status.success(),
        "the page must show the refusal: {}{}",
        String::from_utf8_lossy(&own.stdout),
        String::from_utf8_lossy(&own.stderr)
    );
    assert!(String::from_utf8_lossy(&own.stdout).contains("own"));
    assert_eq!(status_of(&gw, &id).await, "pending");

    let alice = gw.token_with_groups("alice", &["approvers"]);
    let approved = sluice_integration_tests::browser(&[&page, &alice, &id, "approve"]).await;
    assert!(
        approved.status.success(),
        "{}{}",
        String::from_utf8_lossy(&approved.stdout),
        String::from_utf8_lossy(&approved.stderr)
    );
    assert_eq!(tags(&raw.until_ready().await), "CZ");
    assert_eq!(count(&gw, 5016).await, 1);
    let token = gw.token_with_groups("auditor", &["approvers"]);
    let (_, body) = http(
        gw.admin,
        "GET",
        &format!("/v1/approvals/{id}"),
        Some(&token),
        None,
    )
    .await;
    assert!(body.contains("clicked in the browser"), "{body}");
}

#[tokio::test]
async fn an_approval_covers_those_parameter_values_once_even_for_a_named_statement() {
    let gw = gateway("timeout = \"30s\"").await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;

    // Unnamed: the same text with other parameters is a new request.
    for (value, verdict, expected) in [(5017, "approve", "12CZ"), (5018, "deny", "EZ")] {
        let mut out = BytesMut::new();
        frontend::parse("", "INSERT INTO items VALUES ($1::int, 'p')", [], &mut out).unwrap();
        sluice_integration_tests::bind_and_execute(&mut out, &[&value.to_string()]);
        frontend::sync(&mut out);
        raw.send(&out).await;
        let id = notice_id(&mut raw).await;
        let token = gw.token_with_groups("alice", &["approvers"]);
        let (_, body) = http(
            gw.admin,
            "GET",
            &format!("/v1/approvals/{id}"),
            Some(&token),
            None,
        )
        .await;
        assert!(
            body.contains(&format!("\"{value}\"")),
            "the request shows the parameter: {body}"
        );
        vote(&gw, &id, "alice", verdict, "").await;
        assert_eq!(tags(&raw.until_ready().await), expected, "{value}");
    }
    assert_eq!(count(&gw, 5017).await, 1);
    assert_eq!(count(&gw, 5018).await, 0);

    // Named: prepared without a hold, then every execution is held with its parameters.
    let mut out = BytesMut::new();
    frontend::parse(
        "ins",
        "INSERT INTO items VALUES ($1::int, 'named')",
        [],
        &mut out,
    )
    .unwrap();
    frontend::sync(&mut out);
    assert_eq!(tags(&raw.exchange(&out).await), "1Z");
    for (value, verdict, expected) in [(5019, "approve", "2CZ"), (5020, "deny", "EZ")] {
        let mut out = BytesMut::new();
        sluice_integration_tests::bind_statement_and_execute(
            &mut out,
            "ins",
            &[&value.to_string()],
        );
        frontend::sync(&mut out);
        raw.send(&out).await;
        let id = notice_id(&mut raw).await;
        vote(&gw, &id, "alice", verdict, "").await;
        assert_eq!(tags(&raw.until_ready().await), expected, "{value}");
    }
    assert_eq!(count(&gw, 5019).await, 1);
    assert_eq!(count(&gw, 5020).await, 0);
    // The session is in a clean state after the refused Bind.
    assert_eq!(
        tags(&raw.exchange(&query_message("SELECT 1")).await),
        "TDCZ"
    );
}

#[tokio::test]
async fn every_execute_of_a_sql_prepared_write_is_held() {
    let gw = gateway("timeout = \"30s\"").await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let prepare = raw
        .exchange(&query_message(
            "PREPARE ins2 (int) AS INSERT INTO items VALUES ($1, 'sql prepared')",
        ))
        .await;
    assert_eq!(
        tags(&prepare),
        "CZ",
        "preparing runs nothing, so it is not held"
    );
    // Even a scoped approval covers only that EXECUTE: the name could be prepared again as
    // something else.
    for (value, verdict, body, expected) in [
        (5021, "approve", r#"{"scope_seconds":600}"#, "CZ"),
        (5022, "deny", "", "EZ"),
    ] {
        let id = held(&mut raw, &format!("EXECUTE ins2({value})")).await;
        assert!(
            status_body(&gw, &id)
                .await
                .contains("ins2 was prepared as: PREPARE ins2"),
            "approvers see what the EXECUTE runs"
        );
        vote(&gw, &id, "alice", verdict, body).await;
        assert_eq!(tags(&raw.until_ready().await), expected, "{value}");
    }
    assert_eq!(count(&gw, 5021).await, 1);
    assert_eq!(count(&gw, 5022).await, 0);
}

async fn status_body(gw: &TestGateway, id: &str) -> String {
    let token = gw.token_with_groups("auditor", &["approvers"]);
    http(
        gw.admin,
        "GET",
        &format!("/v1/approvals/{id}"),
        Some(&token),
        None,
    )
    .await
    .1
}

/// Accepts one HTTP request, answers 200 and returns its request line and body.
async fn one_webhook_call(listener: tokio::net::TcpListener) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut tcp, _) = listener.accept().await.unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "the webhook request ended early");
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                let line = head.lines().next().unwrap_or_default().to_owned();
                return (line, body.to_owned());
            }
        }
    }
}

#[tokio::test]
async fn a_held_statement_is_posted_to_the_webhooks_in_a_slack_compatible_shape() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // A second hook that is down must not delay anything.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let received = tokio::spawn(one_webhook_call(listener));
    let gw = gateway(&format!(
        "timeout = \"30s\"\nwebhooks = [\"http://127.0.0.1:{port}/hooks/T0/B1?x=1\", \"http://127.0.0.1:{down}/\"]"
    ))
    .await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let id = held(&mut raw, "INSERT INTO items VALUES (5023, 'hooked')").await;
    let (line, body) = tokio::time::timeout(Duration::from_secs(10), received)
        .await
        .expect("the webhook is called")
        .unwrap();
    assert_eq!(line, "POST /hooks/T0/B1?x=1 HTTP/1.1");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let text = json["text"].as_str().unwrap();
    assert!(text.contains(&id), "{text}");
    assert!(
        text.contains("INSERT INTO items VALUES (5023, 'hooked')"),
        "{text}"
    );
    assert!(
        text.contains(&format!("sluice approvals approve {id}")),
        "{text}"
    );
    assert_eq!(json["approval"]["id"], id.as_str());
    assert_eq!(json["approval"]["subject"], "agent");
    assert_eq!(json["approval"]["plugin"], "approve-writes");
    vote(&gw, &id, "alice", "approve", "").await;
    assert_eq!(tags(&raw.until_ready().await), "CZ");
}
