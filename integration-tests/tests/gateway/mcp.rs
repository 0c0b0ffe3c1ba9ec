//! The MCP front door, driven by the official TypeScript SDK's client: tools listed for the
//! grant, tool calls run as statements of the caller's own session through the same policy,
//! masking, approvals and audit as psql's, transactions across calls, 401s with the resource
//! metadata, and revocation ending the session.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_integration_tests::mcp::{McpClient, current_spec_calls, text};
use sluice_integration_tests::{GatewayOptions, PluginSpec, TestGateway, as_superuser};

const MASKING: &str = r#"
[config]
rules = "mcp_people.email=redact"
"#;

/// The table the tests read and write, created once per test binary.
pub(super) async fn fixtures() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        as_superuser(
            "CREATE TABLE mcp_people (id int PRIMARY KEY, name text NOT NULL, email text);
                 INSERT INTO mcp_people VALUES (1, 'Alice', 'alice@example.com'),
                                               (2, 'Bob', 'bob@example.com');
                 GRANT ALL ON mcp_people TO PUBLIC;",
        )
        .await;
    })
    .await;
}

pub(super) async fn gateway(plugins: Vec<PluginSpec>, extra_toml: &str) -> TestGateway {
    fixtures().await;
    TestGateway::start_with(GatewayOptions {
        plugins,
        extra_toml: extra_toml.to_owned(),
        mcp: true,
        ..GatewayOptions::default()
    })
    .await
}

fn guarded() -> Vec<PluginSpec> {
    vec![
        PluginSpec::stock("no-ddl"),
        PluginSpec::with("mask-pii-columns", "mask-pii-columns", MASKING),
    ]
}

/// Every audit record so far, once `done` holds for them.
pub(super) async fn audit_when(gw: &TestGateway, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let path = gw.config.audit_path();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let records: Vec<Value> = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if done(&records) {
            return records;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "audit log never got there: {records:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(super) fn mcp(gw: &TestGateway) -> std::net::SocketAddr {
    gw.mcp.expect("started with mcp")
}

#[tokio::test]
async fn an_mcp_client_lists_the_tools_and_its_queries_pass_the_same_guard_as_psql() {
    let gw = gateway(guarded(), "").await;
    let token = gw.token("agent");
    let mut client = McpClient::connect(mcp(&gw), &token).await;
    assert_eq!(client.hello["connected"], true, "{}", client.hello);

    let tools = client.list_tools().await;
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["query", "list_tables", "describe_table", "explain"]);
    assert_eq!(tools[0]["annotations"]["readOnlyHint"], false);
    assert_eq!(tools[1]["annotations"]["readOnlyHint"], true);

    // Rows as JSON, typed, with the masking plugin's work on them.
    let result = client
        .call(
            "query",
            json!({"sql": "SELECT id, name, email FROM mcp_people WHERE id <= $1 ORDER BY id", "params": [2]}),
        )
        .await;
    assert_ne!(result["isError"], true, "{result}");
    let answer = &result["structuredContent"];
    assert_eq!(
        answer["columns"],
        json!([{"name": "id", "type": "integer"}, {"name": "name", "type": "text"}, {"name": "email", "type": "text"}])
    );
    assert_eq!(answer["rows"][0]["id"], 1);
    assert_eq!(answer["rows"][0]["name"], "Alice");
    let email = answer["rows"][0]["email"].as_str().unwrap();
    assert!(!email.contains("alice"), "masked: {email}");
    assert_eq!(answer["truncated"], false);
    assert_eq!(answer["command"], "SELECT 2");

    // A DDL is a tool error naming the plugin and its reason.
    let refused = client
        .call("query", json!({"sql": "CREATE TABLE mcp_made (a int)"}))
        .await;
    assert_eq!(refused["isError"], true, "{refused}");
    let why = text(&refused);
    assert!(why.contains("no-ddl") && why.contains("42501"), "{why}");

    // The other tools are statements like any other.
    let tables = client
        .call("list_tables", json!({"schema": "public"}))
        .await;
    let rows = tables["structuredContent"]["rows"].as_array().unwrap();
    assert!(rows.iter().any(|r| r["name"] == "mcp_people"), "{tables}");
    let described = client
        .call("describe_table", json!({"table": "mcp_people"}))
        .await;
    let columns = &described["structuredContent"]["rows"];
    assert_eq!(columns[0]["name"], "id", "{described}");
    assert_eq!(columns[1]["nullable"], false);
    let plan = client
        .call(
            "explain",
            json!({"sql": "SELECT n FROM generate_series(1, 3) n"}),
        )
        .await;
    assert_ne!(plan["isError"], true, "{plan}");
    assert!(
        plan["structuredContent"]["rows"][0]["QUERY PLAN"][0]["Plan"].is_object(),
        "{plan}"
    );
    // A plan of a masked table would show its values (a filter's constants): masked whole.
    let masked_plan = client
        .call(
            "explain",
            json!({"sql": "SELECT * FROM mcp_people WHERE email = 'x'"}),
        )
        .await;
    assert!(!masked_plan.to_string().contains("Filter"), "{masked_plan}");

    // The audit log has the same records as on the wire, marked as MCP's.
    let records = audit_when(&gw, |all| {
        all.iter()
            .any(|r| r["type"] == "statement" && r["decision"] == "deny")
    })
    .await;
    let start = records
        .iter()
        .find(|r| r["type"] == "session_start")
        .expect("a session");
    assert_eq!(start["via"], "mcp");
    assert_eq!(start["subject"], "agent");
    assert!(
        start["client_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let denied = records
        .iter()
        .find(|r| r["type"] == "statement" && r["decision"] == "deny")
        .unwrap();
    assert_eq!(denied["via"], "mcp");
    assert_eq!(denied["plugin"], "no-ddl");
    assert_eq!(denied["text"], "CREATE TABLE mcp_made (a int)");
    client.close().await;
}

#[tokio::test]
async fn a_transaction_spans_tool_calls_and_the_session_ends_with_the_mcp_session() {
    let gw = gateway(Vec::new(), "").await;
    let mut client = McpClient::connect(mcp(&gw), &gw.token("agent")).await;
    let begun = client.call("query", json!({"sql": "BEGIN"})).await;
    assert_eq!(begun["structuredContent"]["transaction"], "open", "{begun}");
    client
        .call(
            "query",
            json!({"sql": "INSERT INTO mcp_people VALUES (10, 'Carol', NULL)"}),
        )
        .await;
    // Another token's session does not see it; this one does.
    let mut other = McpClient::connect(mcp(&gw), &gw.token("agent")).await;
    let outside = other
        .call(
            "query",
            json!({"sql": "SELECT count(*) FROM mcp_people WHERE id = 10"}),
        )
        .await;
    assert_eq!(outside["structuredContent"]["rows"][0]["count"], 0);
    let inside = client
        .call(
            "query",
            json!({"sql": "SELECT count(*) FROM mcp_people WHERE id = 10"}),
        )
        .await;
    assert_eq!(inside["structuredContent"]["rows"][0]["count"], 1);
    // A statement the protocol cannot carry is refused before anything is sent: the
    // transaction is still there.
    let nul = client
        .call("query", json!({"sql": "SELECT 'a\u{0}b'"}))
        .await;
    assert!(nul["error"].is_string(), "{nul}");
    let still = client
        .call(
            "query",
            json!({"sql": "SELECT count(*) FROM mcp_people WHERE id = 10"}),
        )
        .await;
    assert_eq!(still["structuredContent"]["rows"][0]["count"], 1, "{still}");
    let rolled = client.call("query", json!({"sql": "ROLLBACK"})).await;
    assert_eq!(rolled["structuredContent"]["transaction"], "none");

    // Ending the MCP session ends its database session.
    client.close().await;
    audit_when(&gw, |all| all.iter().any(|r| r["type"] == "session_end")).await;
    other.close().await;
}

#[tokio::test]
async fn a_client_of_the_current_spec_without_sessions_keeps_its_transaction_across_calls() {
    let gw = gateway(guarded(), "").await;
    let token = gw.token("agent");
    let answer = current_spec_calls(
        mcp(&gw),
        &token,
        json!([
            ["query", {"sql": "BEGIN"}],
            ["query", {"sql": "INSERT INTO mcp_people VALUES (30, 'Erin', 'erin@example.com')"}],
            ["query", {"sql": "SELECT email FROM mcp_people WHERE id = 30"}],
            ["query", {"sql": "DROP TABLE mcp_people"}],
            ["query", {"sql": "ROLLBACK"}],
        ]),
    )
    .await;
    assert_eq!(answer["protocol_version"], "2026-07-28", "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results[1]["structured"]["transaction"], "open", "{answer}");
    // The row it inserted in the transaction is there on the next call, masked.
    let email = &results[2]["structured"]["rows"][0]["email"];
    assert!(email.is_string() && email != "erin@example.com", "{answer}");
    assert_eq!(results[3]["is_error"], true);
    assert!(results[3]["text"].as_str().unwrap().contains("no-ddl"));
    assert_eq!(results[4]["structured"]["transaction"], "none");

    // Calls without a session share one database session per token.
    let records = audit_when(&gw, |all| {
        all.iter().filter(|r| r["type"] == "statement").count() >= 5
    })
    .await;
    let starts = records
        .iter()
        .filter(|r| r["type"] == "session_start")
        .count();
    assert_eq!(starts, 1, "{records:?}");
}

/// A gateway holding writes for approval, and a client whose call "w" runs `sql` and waits:
/// the approval id, as the progress notification the call received carries it.
async fn held_write(sql: &str) -> (TestGateway, McpClient, String) {
    let gw = gateway(
        vec![PluginSpec::stock("approve-writes")],
        "[approvals]\ntimeout = \"60s\"\n",
    )
    .await;
    let mut client = McpClient::connect(mcp(&gw), &gw.token("agent")).await;
    client.start_call("w", "query", json!({"sql": sql})).await;
    let progress = client.next().await;
    assert_eq!(progress["id"], "w", "{progress}");
    let message = progress["progress"].as_str().unwrap_or_default();
    let id = message
        .split_whitespace()
        .find(|w| w.starts_with("apr-"))
        .unwrap_or_else(|| panic!("no approval id in {progress}"))
        .to_owned();
    (gw, client, id)
}

#[tokio::test]
async fn a_write_held_for_approval_waits_in_the_call_and_runs_once_approved_through_the_cli() {
    // The approval id arrives as progress while the call waits.
    let (gw, mut client, id) = held_write("INSERT INTO mcp_people VALUES (20, 'Dan', NULL)").await;

    let alice = gw.token_with_groups("alice", &["approvers"]);
    let approved = gw
        .approvals_cli(&alice, &["approve", &id, "--reason", "fine"])
        .await;
    assert!(
        approved.status.success(),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    let result = client.answer("w").await;
    assert_ne!(result["isError"], true, "{result}");
    assert_eq!(result["structuredContent"]["command"], "INSERT 0 1");
    let count = client
        .call(
            "query",
            json!({"sql": "SELECT count(*) FROM mcp_people WHERE id = 20"}),
        )
        .await;
    assert_eq!(count["structuredContent"]["rows"][0]["count"], 1);
    client.close().await;
}

#[tokio::test]
async fn a_cancelled_call_withdraws_its_held_statement_and_the_session_goes_on() {
    let (gw, mut client, _) = held_write("INSERT INTO mcp_people VALUES (40, 'Fay', NULL)").await;
    client.cancel("w").await;
    let cancelled = client.answer("w").await;
    assert!(cancelled["error"].is_string(), "{cancelled}");
    let records = audit_when(&gw, |all| {
        all.iter()
            .any(|r| r["type"] == "approval_decided" && r["status"] == "withdrawn")
    })
    .await;
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "statement" && r["decision"] == "withdrawn"),
        "{records:?}"
    );
    // The session is in step: the next call gets its own answer.
    let next = client
        .call("query", json!({"sql": "SELECT 'after' AS x"}))
        .await;
    assert_eq!(next["structuredContent"]["rows"][0]["x"], "after", "{next}");
    let count = client
        .call(
            "query",
            json!({"sql": "SELECT count(*) FROM mcp_people WHERE id = 40"}),
        )
        .await;
    assert_eq!(count["structuredContent"]["rows"][0]["count"], 0);
    client.close().await;
}

#[tokio::test]
async fn results_past_the_byte_budget_are_cut_and_the_session_goes_on() {
    let gw = gateway(Vec::new(), "[mcp]\nmax_result_bytes = 250000\n").await;
    let mut client = McpClient::connect(mcp(&gw), &gw.token("agent")).await;
    let pid = client
        .call("query", json!({"sql": "SELECT pg_backend_pid() AS pid"}))
        .await["structuredContent"]["rows"][0]["pid"]
        .clone();
    // Rows of 100 kB: two fit.
    let some = client
        .call(
            "query",
            json!({"sql": "SELECT n, repeat('x', 100000) AS big FROM generate_series(1, 5) n"}),
        )
        .await;
    let answer = &some["structuredContent"];
    assert_eq!(
        answer["rows"].as_array().unwrap().len(),
        2,
        "{}",
        answer["row_count"]
    );
    assert_eq!(answer["truncated"], true);
    // One row larger than the whole budget is read past, never held.
    let huge = client
        .call(
            "query",
            json!({"sql": "SELECT repeat('y', 1000000) AS huge"}),
        )
        .await;
    assert_eq!(
        huge["structuredContent"]["rows"],
        json!([]),
        "{}",
        huge["structuredContent"]["row_count"]
    );
    assert_eq!(huge["structuredContent"]["truncated"], true);
    // A row dropped cuts the answer there: what comes back is a prefix of the result.
    let prefix = client
        .call(
            "query",
            json!({"sql": "SELECT n, CASE WHEN n = 2 THEN repeat('y', 1000000) ELSE 'z' END AS v FROM generate_series(1, 3) n"}),
        )
        .await;
    assert_eq!(
        prefix["structuredContent"]["rows"],
        json!([{"n": 1, "v": "z"}])
    );
    assert_eq!(prefix["structuredContent"]["truncated"], true);
    // Same session after all of them.
    let again = client
        .call("query", json!({"sql": "SELECT pg_backend_pid() AS pid"}))
        .await;
    assert_eq!(again["structuredContent"]["rows"][0]["pid"], pid);
    client.close().await;
}

#[tokio::test]
async fn copy_through_a_tool_is_refused_and_the_session_stays_in_step() {
    let gw = gateway(Vec::new(), "").await;
    let mut client = McpClient::connect(mcp(&gw), &gw.token("agent")).await;
    let copy_in = client
        .call("query", json!({"sql": "COPY mcp_people FROM STDIN"}))
        .await;
    assert_eq!(copy_in["isError"], true, "{copy_in}");
    assert!(
        text(&copy_in).contains("COPY FROM STDIN is not available"),
        "{}",
        text(&copy_in)
    );
    let copy_out = client
        .call("query", json!({"sql": "COPY (SELECT 1) TO STDOUT"}))
        .await;
    assert_eq!(copy_out["isError"], true, "{copy_out}");
    assert!(text(&copy_out).contains("0A000"), "{}", text(&copy_out));
    let next = client
        .call("query", json!({"sql": "SELECT 2 AS two"}))
        .await;
    assert_eq!(next["structuredContent"]["rows"][0]["two"], 2, "{next}");
    client.close().await;
}

#[tokio::test]
async fn a_read_only_grant_is_offered_read_only_tools_and_cannot_write() {
    let gw = gateway(Vec::new(), "").await;
    let mut claims = gw.claims("agent", Duration::from_secs(300));
    claims.read_only = true;
    let mut client = McpClient::connect(mcp(&gw), &gw.sign(&claims)).await;
    let tools = client.list_tools().await;
    let query = tools.iter().find(|t| t["name"] == "query").unwrap();
    assert_eq!(query["annotations"]["readOnlyHint"], true, "{query}");
    assert_eq!(query["annotations"]["destructiveHint"], false);
    assert!(query["description"].as_str().unwrap().contains("read-only"));
    let write = client
        .call("query", json!({"sql": "DELETE FROM mcp_people"}))
        .await;
    assert_eq!(write["isError"], true, "{write}");
    assert!(text(&write).contains("25006"), "{}", text(&write));
    client.close().await;
}

#[tokio::test]
async fn a_session_idled_out_with_a_transaction_open_says_so_before_running_anything() {
    let gw = gateway(Vec::new(), "[mcp]\nidle_timeout = \"1s\"\n").await;
    let mut client = McpClient::connect(mcp(&gw), &gw.token("agent")).await;
    client.call("query", json!({"sql": "BEGIN"})).await;
    client
        .call(
            "query",
            json!({"sql": "INSERT INTO mcp_people VALUES (50, 'Gus', NULL)"}),
        )
        .await;
    // The gateway records the session's end once the MCP server closes it.
    audit_when(&gw, |all| all.iter().any(|r| r["type"] == "session_end")).await;
    let lost = client
        .call(
            "query",
            json!({"sql": "INSERT INTO mcp_people VALUES (51, 'Hal', NULL)"}),
        )
        .await;
    assert_eq!(lost["isError"], true, "{lost}");
    assert!(text(&lost).contains("rolled back"), "{}", text(&lost));
    let count = client
        .call(
            "query",
            json!({"sql": "SELECT count(*) FROM mcp_people WHERE id IN (50, 51)"}),
        )
        .await;
    assert_eq!(count["structuredContent"]["rows"][0]["count"], 0, "{count}");
}

#[tokio::test]
async fn rows_past_the_limit_are_cut_and_flagged() {
    let gw = gateway(Vec::new(), "[mcp]\nrow_limit = 3\n").await;
    let mut client = McpClient::connect(mcp(&gw), &gw.token("agent")).await;
    let result = client
        .call(
            "query",
            json!({"sql": "SELECT n FROM generate_series(1, 10) n"}),
        )
        .await;
    let answer = &result["structuredContent"];
    assert_eq!(answer["rows"], json!([{"n": 1}, {"n": 2}, {"n": 3}]));
    assert_eq!(answer["truncated"], true);
    client.close().await;
}

#[tokio::test]
async fn revoking_the_token_ends_its_mcp_session_and_refuses_its_next_call() {
    let gw = gateway(Vec::new(), "").await;
    let token = gw.token("agent");
    let jti = sluice_integration_tests::jwt_claims(&token)["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut client = McpClient::connect(mcp(&gw), &token).await;
    let first = client
        .call("query", json!({"sql": "SELECT 1 AS one"}))
        .await;
    assert_eq!(first["structuredContent"]["rows"][0]["one"], 1, "{first}");

    gw.revoke(json!({"jti": jti, "reason": "agent misbehaved"}))
        .await;
    let records = audit_when(&gw, |all| {
        all.iter()
            .any(|r| r["type"] == "session_end" && r["reason"] == "revoked")
    })
    .await;
    let end = records.iter().find(|r| r["type"] == "session_end").unwrap();
    let start = records
        .iter()
        .find(|r| r["type"] == "session_start" && r["session"] == end["session"])
        .unwrap();
    assert_eq!(start["via"], "mcp");

    let next = client.call("query", json!({"sql": "SELECT 1"})).await;
    let refused = format!("{next}");
    assert!(refused.contains("401"), "{refused}");
}
