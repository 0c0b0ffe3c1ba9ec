//! The audit log of a real gateway: what is recorded about whom, that `sluice audit verify`
//! passes on a real run and catches tampering, that a gateway killed with SIGKILL under load
//! leaves a log that still verifies and covers every statement Postgres executed, and that a
//! log that cannot be written refuses statements.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use sluice::config::Config;
use sluice_integration_tests::{
    DATABASE, GatewayOptions, GatewayProcess, PluginSpec, TestGateway, audit_records_when,
    sluice_binary,
};

fn audit_path(config: &Path) -> PathBuf {
    Config::load(config).unwrap().audit_path()
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is a JSON record"))
        .collect()
}

fn of_type<'a>(all: &'a [Value], kind: &str) -> Vec<&'a Value> {
    all.iter().filter(|r| r["type"] == kind).collect()
}

fn verify_cli(config: &Path) -> std::process::Output {
    std::process::Command::new(sluice_binary())
        .args(["audit", "verify", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_real_run_records_who_ran_what_and_how_it_ended_and_verifies() {
    let gw = TestGateway::start_with(GatewayOptions {
        plugins: vec![PluginSpec::stock("no-ddl")],
        ..GatewayOptions::default()
    })
    .await;
    let log = audit_path(&gw.config_path);
    let client = gw.connect("agent-7", &gw.token("agent-7")).await.unwrap();
    client
        .batch_execute("SELECT 1; INSERT INTO items VALUES (9100, 'audited')")
        .await
        .unwrap();
    let rows = client
        .query("SELECT name FROM items WHERE id <= $1", &[&3i32])
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert!(client.batch_execute("DROP TABLE items").await.is_err());
    let err = client.batch_execute("SELECT 1/0").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22012");
    drop(client);
    // A refused login: no session, a login_failure with a reason class and no token text.
    assert!(gw.connect("agent-7", "not-a-token").await.is_err());

    let all = audit_records_when(&log, |all| {
        !of_type(all, "session_end").is_empty() && !of_type(all, "login_failure").is_empty()
    })
    .await;
    let start = of_type(&all, "session_start")[0];
    assert_eq!(start["subject"], "agent-7");
    assert_eq!(start["database"], DATABASE);
    assert!(start["token_id"].as_str().is_some_and(|t| !t.is_empty()));

    let statements = of_type(&all, "statement");
    let by_text = |text: &str| {
        statements
            .iter()
            .find(|s| s["text"].as_str() == Some(text))
            .unwrap_or_else(|| panic!("no record of {text}: {statements:#?}"))
    };
    let batch = by_text("SELECT 1; INSERT INTO items VALUES (9100, 'audited')");
    assert_eq!(batch["decision"], "allow");
    assert_eq!(batch["subject"], "agent-7");
    assert_eq!(batch["kinds"], serde_json::json!(["select", "insert"]));
    assert_eq!(batch["tables_written"], serde_json::json!(["items"]));
    let results = of_type(&all, "result");
    let result_of = |statement: &Value, part: u64| {
        results
            .iter()
            .find(|r| {
                r["statement"] == statement["statement"]
                    && r["part"] == part
                    && r["session"] == statement["session"]
            })
            .copied()
            .unwrap_or_else(|| panic!("no result for {statement} part {part}"))
    };
    assert_eq!(result_of(batch, 1)["tag"], "INSERT 0 1");
    assert_eq!(result_of(batch, 1)["rows"], 1);

    // Extended protocol: the Parse's text, then each execution (Bind) with its parameters.
    let parse = by_text("SELECT name FROM items WHERE id <= $1");
    assert_eq!(parse["protocol"], "parse");
    let bind = statements
        .iter()
        .find(|s| s["protocol"] == "bind" && s["prepared"] == parse["statement"])
        .expect("the execution is recorded");
    // tokio-postgres sends an int4 in binary: recorded as hex.
    assert_eq!(bind["params"], serde_json::json!(["\\x00000003"]));
    assert_eq!(result_of(bind, 0)["rows"], 3);

    // Denied by a plugin: the plugin, its content hash and its reason.
    let denied = by_text("DROP TABLE items");
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["plugin"], "no-ddl");
    assert_eq!(denied["plugin_hash"].as_str().unwrap().len(), 64);
    // Failed in Postgres: the SQLSTATE.
    let failed = by_text("SELECT 1/0");
    assert_eq!(result_of(failed, 0)["sqlstate"], "22012");
    assert_eq!(result_of(failed, 0)["outcome"], "error");

    let failure = of_type(&all, "login_failure")[0];
    assert_eq!(failure["user"], "agent-7");
    assert!(!failure.to_string().contains("not-a-token"));
    let end = of_type(&all, "session_end")[0];
    assert_eq!(end["subject"], "agent-7");
    assert!(end["statements"].as_u64().unwrap() >= 4);
    // Plugin loads are recorded with their hash.
    assert!(
        of_type(&all, "plugin_loaded")
            .iter()
            .any(|p| p["plugin"] == "no-ddl")
    );

    let out = verify_cli(&gw.config_path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));
}

#[tokio::test]
async fn verify_names_the_file_and_line_of_an_edit_after_a_clean_shutdown() {
    let gw = TestGateway::start().await;
    let log = audit_path(&gw.config_path);
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    for i in 0..5 {
        client.batch_execute(&format!("SELECT {i}")).await.unwrap();
    }
    drop(client);
    gw.gateway.shutdown(Duration::from_secs(5)).await;
    let out = verify_cli(&gw.config_path);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("signatures verified"), "{stdout}");
    let mut lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let victim = lines
        .iter()
        .position(|l| l.contains("\"text\":\"SELECT 2\""))
        .unwrap();
    lines[victim] = lines[victim].replace("SELECT 2", "SELECT 7");
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let out = verify_cli(&gw.config_path);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success());
    let spot = format!("{}:{}", log.display(), victim + 2);
    assert!(
        stdout.contains(&spot),
        "points at the record after the edit: {stdout}"
    );
    assert!(
        stdout.contains(&format!(":{})", victim + 1)),
        "and names the edited one: {stdout}"
    );
}

#[tokio::test]
async fn a_log_that_cannot_be_written_refuses_statements_with_58030_unless_told_to_continue() {
    let refuse = TestGateway::start_with(GatewayOptions {
        extra_toml: "[audit]\npath = \"/dev/full\"\n".into(),
        ..GatewayOptions::default()
    })
    .await;
    let client = refuse
        .connect("agent", &refuse.token("agent"))
        .await
        .unwrap();
    for _ in 0..2 {
        let err = client.simple_query("SELECT 1").await.unwrap_err();
        assert_eq!(err.code().unwrap().code(), "58030", "{err}");
        let message = err.as_db_error().unwrap().message();
        assert!(message.contains("audit log"), "{message}");
    }
    let err = client.query("SELECT $1::int", &[&1i32]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "58030", "{err}");

    let go_on = TestGateway::start_with(GatewayOptions {
        extra_toml: "[audit]\npath = \"/dev/full\"\non_failure = \"continue\"\n".into(),
        ..GatewayOptions::default()
    })
    .await;
    let client = go_on.connect("agent", &go_on.token("agent")).await.unwrap();
    assert_eq!(
        client
            .query_one("SELECT $1::int", &[&1i32])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}

#[tokio::test]
async fn a_gateway_killed_under_pgbench_restarts_with_a_log_that_verifies_and_covers_every_executed_statement()
 {
    let pg_setup = TestGateway::start().await;
    pg_setup
        .connect("setup", &pg_setup.token("setup"))
        .await
        .unwrap()
        .batch_execute("CREATE TABLE IF NOT EXISTS audit_load (v bigint NOT NULL)")
        .await
        .unwrap();
    drop(pg_setup);
    let mut gw = GatewayProcess::start(GatewayOptions::default()).await;
    let script = sluice_integration_tests::pgbench_script(
        "\\set v random(1, 9000000000000)\nINSERT INTO audit_load VALUES (:v);\n",
    );
    let token = gw.token("loader");
    let pgbench = sluice_integration_tests::pgbench(
        gw.port(),
        "loader",
        &token,
        &["-n", "-c", "4", "-j", "2", "-T", "30"],
        script.path(),
    )
    .spawn()
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    gw.kill().await;
    let _ = pgbench.wait_with_output().await;

    gw.restart().await;
    let reader = gw.token("reader");
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(gw.port())
        .user("reader")
        .password(reader)
        .dbname(DATABASE)
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect(sluice_integration_tests::tls_connector())
        .await
        .unwrap();
    tokio::spawn(connection);
    let values: Vec<i64> = client
        .query("SELECT v FROM audit_load", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(values.len() > 50, "pgbench ran: {} rows", values.len());
    drop(client);

    let out = verify_cli(&gw.config_path);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("stopped uncleanly"), "{stderr}");

    let all = records(&audit_path(&gw.config_path));
    let recorded: std::collections::HashSet<String> = of_type(&all, "statement")
        .iter()
        .filter(|s| s["decision"] == "allow")
        .filter_map(|s| s["text"].as_str())
        .filter_map(|t| t.strip_prefix("INSERT INTO audit_load VALUES ("))
        .map(|v| v.trim_end_matches([')', ';']).to_owned())
        .collect();
    let missing: Vec<&i64> = values
        .iter()
        .filter(|v| !recorded.contains(&v.to_string()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} executed inserts have no audit record: {:?}",
        missing.len(),
        values.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test]
async fn with_fsync_durability_reads_in_block_writes_commits_and_pipelines_run_and_are_all_recorded()
 {
    let gw = TestGateway::start_with(GatewayOptions {
        extra_toml: "[audit]\ndurability = \"fsync\"\n".into(),
        ..GatewayOptions::default()
    })
    .await;
    let log = audit_path(&gw.config_path);
    let mut client = gw.connect("agent-9", &gw.token("agent-9")).await.unwrap();
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS fsync_probe (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    let recorded = |text: &str| {
        records(&log)
            .iter()
            .any(|r| r["type"] == "statement" && r["text"].as_str() == Some(text))
    };

    // Rows of a read, which is forwarded before its record is on disk: the record is in the
    // file by the time they arrive.
    let read = "SELECT count(*) FROM items WHERE id <= 100";
    let rows = client.simple_query(read).await.unwrap();
    let count = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(count.as_deref(), Some("100"));
    assert!(recorded(read), "rows arrived before their record");

    // A transaction (extended protocol): writes inside it are forwarded at once, the COMMIT
    // waits for the disk; everything lands and commits.
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO fsync_probe VALUES ($1, 'in block')", &[&1i32])
        .await
        .unwrap();
    let inside = tx
        .query("SELECT v FROM fsync_probe WHERE id = $1", &[&1i32])
        .await
        .unwrap();
    assert_eq!(inside[0].get::<_, String>(0), "in block");
    tx.commit().await.unwrap();

    // A pipeline: several statements in flight at once, each answered (tokio's join! polls in
    // a rotating order, so they do not depend on each other).
    let (a, b, c) = tokio::join!(
        client.query("SELECT v FROM fsync_probe WHERE id = $1", &[&1i32]),
        client.execute("INSERT INTO fsync_probe VALUES ($1, 'pipelined')", &[&2i32]),
        client.query("SELECT count(*) FROM items WHERE id <= $1", &[&10i32]),
    );
    assert_eq!(a.unwrap()[0].get::<_, String>(0), "in block");
    assert_eq!(b.unwrap(), 1);
    assert_eq!(c.unwrap()[0].get::<_, i64>(0), 10);
    let after = client
        .query("SELECT count(*) FROM fsync_probe", &[])
        .await
        .unwrap();
    assert_eq!(after[0].get::<_, i64>(0), 2);
    drop(client);

    let all = audit_records_when(&log, |all| !of_type(all, "session_end").is_empty()).await;
    let binds = of_type(&all, "statement")
        .iter()
        .filter(|r| r["protocol"] == "bind" && r["decision"] == "allow")
        .count();
    // The transaction's INSERT and SELECT, the pipeline's three and the count; tokio-postgres
    // sends START TRANSACTION and COMMIT as simple queries.
    assert_eq!(binds, 6, "executions recorded");
    assert!(recorded("START TRANSACTION") && recorded("COMMIT"));
    let out = verify_cli(&gw.config_path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn normalized_text_keeps_constants_and_parameter_values_out_of_the_log() {
    let gw = TestGateway::start_with(GatewayOptions {
        extra_toml: "[audit]\nstatement_text = \"normalized\"\n".into(),
        ..GatewayOptions::default()
    })
    .await;
    let log = audit_path(&gw.config_path);
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    client
        .batch_execute("SELECT name FROM items WHERE name = 'secret-value-1'")
        .await
        .unwrap();
    client
        .query(
            "SELECT name FROM items WHERE name = $1",
            &[&"secret-value-2"],
        )
        .await
        .unwrap();
    drop(client);
    let all = audit_records_when(&log, |all| !of_type(all, "session_end").is_empty()).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("secret-value"), "values leaked into the log");
    assert!(
        of_type(&all, "statement")
            .iter()
            .any(|s| s["text"] == "SELECT name FROM items WHERE name = $1"),
        "{all:#?}"
    );
}

#[tokio::test]
async fn approvals_are_recorded_with_the_request_the_votes_and_the_statement_they_let_run() {
    let gw = TestGateway::start_with(GatewayOptions {
        plugins: vec![PluginSpec::stock("approve-writes")],
        ..GatewayOptions::default()
    })
    .await;
    let log = audit_path(&gw.config_path);
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let write = tokio::spawn(async move {
        client
            .batch_execute("INSERT INTO items VALUES (9200, 'approved')")
            .await
    });
    let all = audit_records_when(&log, |all| !of_type(all, "approval_requested").is_empty()).await;
    let id = of_type(&all, "approval_requested")[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = gw.token_with_groups("alice", &["approvers"]);
    let (code, body) = sluice_integration_tests::http(
        gw.admin,
        "POST",
        &format!("/v1/approvals/{id}/approve"),
        Some(&token),
        Some(r#"{"reason":"looks fine"}"#),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    write.await.unwrap().unwrap();
    let all = audit_records_when(&log, |all| !of_type(all, "approval_decided").is_empty()).await;
    let requested = of_type(&all, "approval_requested")[0];
    assert_eq!(requested["subject"], "agent");
    assert_eq!(requested["plugin"], "approve-writes");
    let decided = of_type(&all, "approval_decided")[0];
    assert_eq!(decided["status"], "approved");
    assert_eq!(decided["votes"][0]["approver"], "alice");
    assert_eq!(decided["votes"][0]["reason"], "looks fine");
    let statement = of_type(&all, "statement")
        .into_iter()
        .find(|s| s["approval"] == id.as_str())
        .expect("the statement names its approval");
    assert_eq!(statement["decision"], "approved");
    assert_eq!(
        statement["approvers"],
        serde_json::json!(["approved:alice"])
    );
    assert_eq!(statement["plugin"], "approve-writes");
}

#[tokio::test]
async fn tail_prints_one_subjects_records() {
    let gw = TestGateway::start().await;
    for subject in ["agent-a", "agent-b"] {
        let client = gw.connect(subject, &gw.token(subject)).await.unwrap();
        client.batch_execute("SELECT 1").await.unwrap();
    }
    gw.gateway.shutdown(Duration::from_secs(5)).await;
    let out = std::process::Command::new(sluice_binary())
        .args(["audit", "tail", "--subject", "agent-b", "--config"])
        .arg(&gw.config_path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|r| r["type"] == "session_start"));
    assert!(lines.iter().any(|r| r["type"] == "statement"));
    assert!(
        lines.iter().all(|r| r["subject"] == "agent-b"),
        "{lines:#?}"
    );
}
