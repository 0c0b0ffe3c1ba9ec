//! Stock policy plugins through real clients, and the evasions a policy gateway must not fall
//! for.

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use sluice_integration_tests::{
    GatewayOptions, PluginSpec, RawClient, TestGateway, error_message, sqlstate, tags,
};

async fn gateway(plugins: Vec<PluginSpec>) -> TestGateway {
    TestGateway::start_with(GatewayOptions {
        plugins,
        ..Default::default()
    })
    .await
}

fn stock() -> Vec<PluginSpec> {
    vec![
        PluginSpec::stock("no-ddl"),
        PluginSpec::stock("safe-writes"),
        PluginSpec::stock("guard-functions"),
        PluginSpec::stock("guard-roles"),
        PluginSpec::with("read-only", "read-only", "[config]\ngroups = \"readers\"\n"),
    ]
}

/// Runs `sql` and returns the SQLSTATE and message of its error, or panics if it succeeds.
async fn refused(client: &tokio_postgres::Client, sql: &str) -> (String, String) {
    let err = client
        .batch_execute(sql)
        .await
        .expect_err(&format!("must be refused: {sql}"));
    (sqlstate(&err), error_message(&err))
}

/// Parse (unnamed) `SELECT $1::text`, Bind `value`, Execute, Sync; the reply up to
/// ReadyForQuery.
async fn unnamed_select_with(
    raw: &mut RawClient,
    value: &str,
) -> Vec<sluice_integration_tests::Msg> {
    let mut out = BytesMut::new();
    frontend::parse("", "SELECT $1::text", None, &mut out).unwrap();
    sluice_integration_tests::bind_and_execute(&mut out, &[value]);
    frontend::sync(&mut out);
    raw.exchange(&out).await
}

#[tokio::test]
async fn no_ddl_refuses_schema_changes_and_names_itself() {
    let gw = gateway(stock()).await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let (code, message) = refused(&client, "CREATE TABLE sneaky (a int)").await;
    assert_eq!(code, "42501");
    assert!(message.contains("\"no-ddl\""), "{message}");
    assert!(message.contains("DDL"), "{message}");
    for sql in [
        "/* looks harmless */ DROP TABLE items",
        "ALTER TABLE items ADD COLUMN x int",
        "SELECT * INTO stolen FROM items",
        "GRANT ALL ON items TO PUBLIC",
    ] {
        assert_eq!(refused(&client, sql).await.0, "42501", "{sql}");
    }
    // A DDL keyword inside a string or dollar quote is data, not a statement.
    let rows = client
        .simple_query("SELECT $q$DROP TABLE items$q$, 'CREATE TABLE x'")
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
}

#[tokio::test]
async fn safe_writes_requires_where_and_refuses_truncate() {
    let gw = gateway(vec![PluginSpec::stock("safe-writes")]).await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("UPDATE items SET name = name WHERE id = 1")
        .await
        .unwrap();
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        refused(&client, "UPDATE items SET name = 'x'").await.0,
        "42501"
    );
    assert_eq!(refused(&client, "DELETE FROM items").await.0, "42501");
    assert_eq!(
        refused(
            &client,
            "WITH d AS (DELETE FROM items RETURNING id) SELECT count(*) FROM d"
        )
        .await
        .0,
        "42501",
        "a DELETE without WHERE hidden in a CTE"
    );
    let (code, message) = refused(&client, "TRUNCATE items").await;
    assert_eq!(code, "42501");
    assert!(message.contains("TRUNCATE"), "{message}");
    let count: i64 = client
        .query_one("SELECT count(*) FROM items WHERE id <= 100", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 100);
}

#[tokio::test]
async fn read_only_group_may_read_but_not_write_even_when_hidden() {
    let gw = gateway(stock()).await;
    let reader = gw
        .connect("reader", &gw.token_with_groups("reader", &["readers"]))
        .await
        .unwrap();
    reader
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap();
    for sql in [
        "INSERT INTO items VALUES (1000, 'x')",
        "WITH x AS (INSERT INTO items VALUES (1001, 'y') RETURNING id) SELECT * FROM x",
        "EXPLAIN ANALYZE INSERT INTO items VALUES (1002, 'z')",
        "DO $$ BEGIN INSERT INTO items VALUES (1003, 'w'); END $$",
        "COPY items FROM STDIN",
    ] {
        let (code, message) = refused(&reader, sql).await;
        assert_eq!(code, "42501", "{sql}");
        // guard-roles, also loaded, refuses DO blocks for everyone, and may come first.
        assert!(
            message.contains("read-only") || message.contains("DO blocks are not allowed"),
            "{sql}: {message}"
        );
    }
    // Plain EXPLAIN of a write only plans it.
    reader
        .simple_query("EXPLAIN INSERT INTO items VALUES (1004, 'v')")
        .await
        .unwrap();
    // Someone outside the group may write.
    let writer = gw.connect("writer", &gw.token("writer")).await.unwrap();
    writer
        .batch_execute("BEGIN; INSERT INTO items VALUES (1005, 'ok'); ROLLBACK")
        .await
        .unwrap();
}

#[tokio::test]
async fn guard_functions_refuses_file_access_and_program_copy_wherever_they_hide() {
    let gw = gateway(stock()).await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    for sql in [
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT ARRAY[pg_catalog.pg_read_file('/etc/passwd')]",
        "SELECT * FROM items WHERE name = (SELECT pg_read_file('x'))",
        "SELECT lo_import('/etc/passwd')",
        "COPY items TO PROGRAM 'cat > /tmp/x'",
        "SELECT set_config('role', 'postgres', false)",
        "SELECT set_config('ro' || 'le', 'postgres', false)",
        "SELECT set_config($$role$$, 'postgres', false)",
        "SELECT \"set_config\"('role', 'postgres', false)",
        "SELECT set_config /* c */ ('role', 'postgres', false)",
    ] {
        assert_eq!(refused(&client, sql).await.0, "42501", "{sql}");
    }
    client
        .simple_query("SELECT upper(name) FROM items LIMIT 1")
        .await
        .unwrap();
}

#[tokio::test]
async fn guard_roles_refuses_identity_switches() {
    let gw = gateway(stock()).await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    for sql in [
        "SET ROLE postgres",
        "SET LOCAL ROLE postgres",
        "SET SESSION AUTHORIZATION postgres",
        "RESET ROLE",
        "RESET ALL",
    ] {
        assert_eq!(refused(&client, sql).await.0, "42501", "{sql}");
    }
    client
        .batch_execute("SET statement_timeout = '5s'")
        .await
        .unwrap();
}

#[tokio::test]
async fn multi_statement_query_is_refused_whole_before_anything_runs() {
    let gw = gateway(stock()).await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let (code, _) = refused(
        &client,
        "INSERT INTO items VALUES (3000, 'first'); CREATE TABLE second (a int)",
    )
    .await;
    assert_eq!(code, "42501");
    let n: i64 = client
        .query_one("SELECT count(*) FROM items WHERE id = 3000", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the allowed first statement must not have run");
}

#[tokio::test]
async fn unparsable_sql_is_refused_as_a_syntax_error() {
    let gw = gateway(stock()).await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let (code, message) = refused(&client, "SELEC * FROM items").await;
    assert_eq!(code, "42601");
    assert!(message.contains("syntax error"), "{message}");
}

#[tokio::test]
async fn refusal_inside_a_transaction_fails_it_so_commit_rolls_back() {
    let gw = gateway(stock()).await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("INSERT INTO items VALUES (4000, 'in txn')")
        .await
        .unwrap();
    assert_eq!(refused(&client, "DROP TABLE items").await.0, "42501");
    let commit = client.simple_query("COMMIT").await.unwrap();
    let tag = commit.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::CommandComplete(_) => Some(()),
        _ => None,
    });
    assert!(tag.is_some());
    let n: i64 = client
        .query_one("SELECT count(*) FROM items WHERE id = 4000", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n, 0,
        "COMMIT after a refusal must not commit the earlier insert"
    );
}

#[tokio::test]
async fn refused_parse_cannot_be_bypassed_with_bind_of_the_unnamed_statement() {
    let gw = gateway(stock()).await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let bind_execute = |out: &mut BytesMut| sluice_integration_tests::bind_and_execute(out, &[]);
    // An allowed unnamed statement first.
    let mut out = BytesMut::new();
    frontend::parse("", "SELECT 1", None, &mut out).unwrap();
    bind_execute(&mut out);
    frontend::sync(&mut out);
    raw.send(&out).await;
    assert_eq!(tags(&raw.until_ready().await), "12DCZ");
    // A refused Parse, with Bind/Execute in the same batch.
    let mut out = BytesMut::new();
    frontend::parse("", "CREATE TABLE bypass (a int)", None, &mut out).unwrap();
    bind_execute(&mut out);
    frontend::sync(&mut out);
    raw.send(&out).await;
    let reply = raw.until_ready().await;
    assert_eq!(tags(&reply), "EZ");
    assert_eq!(reply[0].sqlstate(), "42501");
    // Bind/Execute alone must not run the earlier `SELECT 1` in its place.
    let mut out = BytesMut::new();
    bind_execute(&mut out);
    frontend::sync(&mut out);
    raw.send(&out).await;
    let reply = raw.until_ready().await;
    assert_eq!(
        tags(&reply),
        "EZ",
        "no unnamed statement may survive the refused Parse"
    );
    assert_eq!(reply[0].sqlstate(), "26000");
}

#[tokio::test]
async fn refusal_in_the_middle_of_a_pipeline_keeps_every_answer_in_order() {
    let gw = gateway(stock()).await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let (a, b, c) = tokio::join!(
        client.query_one("SELECT 1::int", &[]),
        client.query("CREATE TABLE piped (a int)", &[]),
        client.query_one("SELECT 3::int", &[]),
    );
    assert_eq!(a.unwrap().get::<_, i32>(0), 1);
    assert_eq!(sqlstate(&b.unwrap_err()), "42501");
    assert_eq!(c.unwrap().get::<_, i32>(0), 3);
}

#[tokio::test]
async fn function_call_message_is_refused() {
    let gw = gateway(stock()).await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    // FunctionCall of oid 1 (no such function; it must not even reach Postgres).
    let mut msg = vec![b'F'];
    let body: Vec<u8> = [
        1u32.to_be_bytes().to_vec(),
        vec![0, 0],
        vec![0, 0],
        vec![0, 0],
    ]
    .concat();
    msg.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    msg.extend_from_slice(&body);
    raw.send(&msg).await;
    let reply = raw.until_ready().await;
    assert_eq!(tags(&reply), "EZ");
    assert_eq!(reply[0].sqlstate(), "42501");
}

#[tokio::test]
async fn plugins_see_bind_parameter_values_of_the_unnamed_statement() {
    let gw = gateway(vec![PluginSpec::with(
        "param-guard",
        "test-faults",
        "[config]\nmode = \"deny-param\"\nparam = \"forbidden\"\n",
    )])
    .await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    for (value, expected) in [
        ("fine", "12DCZ"),
        ("forbidden", "EZ"),
        ("fine again", "12DCZ"),
    ] {
        let reply = unnamed_select_with(&mut raw, value).await;
        assert_eq!(tags(&reply), expected, "parameter {value:?}");
        if expected == "EZ" {
            assert_eq!(reply[0].sqlstate(), "42501");
        }
    }
}

/// A plugin that allows its instance's first `calls` calls and denies every later one,
/// declaring `reuse` for its verdicts: whether it is called shows in what it answers.
fn counting(calls: u32, reuse: &str) -> Vec<PluginSpec> {
    vec![PluginSpec::with(
        "counting",
        "test-faults",
        &format!("[config]\nmode = \"deny-after\"\ncalls = \"{calls}\"\nreuse = \"{reuse}\"\n"),
    )]
}

#[tokio::test]
async fn a_plugin_declaring_no_reuse_is_asked_for_every_statement() {
    let gw = gateway(counting(2, "never")).await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    client.batch_execute("SELECT 1").await.unwrap();
    client.batch_execute("SELECT 1").await.unwrap();
    let (code, message) = refused(&client, "SELECT 1").await;
    assert_eq!(code, "42501");
    assert!(message.contains("call 3 is over the limit"), "{message}");
}

#[tokio::test]
async fn a_shape_wide_verdict_answers_new_constants_but_not_new_shapes() {
    let gw = gateway(counting(2, "shape")).await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    // Call 1; the other constants are answered from memory.
    for id in 1..=5 {
        client
            .batch_execute(&format!("SELECT name FROM items WHERE id = {id}"))
            .await
            .unwrap();
    }
    // `$1` is not a constant: a shape of its own (call 2), then any parameter values.
    for id in [6, 7, 8] {
        client
            .query("SELECT name FROM items WHERE id = $1", &[&id])
            .await
            .unwrap();
    }
    let (_, message) = refused(&client, "SELECT name FROM items WHERE id = 1 OR id = 2").await;
    assert!(message.contains("call 3 is over the limit"), "{message}");
}

#[tokio::test]
async fn a_text_verdict_answers_only_the_same_text_and_parameters() {
    let gw = gateway(counting(2, "text")).await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    // Calls 1 and 2 allow "a" and "b"; repeating them is answered from memory; "c" is call 3.
    for (value, expected) in [
        ("a", "12DCZ"),
        ("b", "12DCZ"),
        ("a", "12DCZ"),
        ("b", "12DCZ"),
        ("c", "EZ"),
    ] {
        assert_eq!(
            tags(&unnamed_select_with(&mut raw, value).await),
            expected,
            "parameter {value:?}"
        );
    }
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    client.batch_execute("SELECT 1").await.unwrap();
    client.batch_execute("SELECT 2").await.unwrap();
    client.batch_execute("SELECT 1").await.unwrap();
    let (_, message) = refused(&client, "SELECT 3").await;
    assert!(message.contains("call 3 is over the limit"), "{message}");
}

#[tokio::test]
async fn a_remembered_verdict_never_answers_for_another_session() {
    let gw = gateway(stock()).await;
    let sql = "UPDATE items SET name = name WHERE id < 0";
    let writer = gw.connect("writer", &gw.token("writer")).await.unwrap();
    writer.batch_execute(sql).await.unwrap();
    let reader = gw
        .connect("reader", &gw.token_with_groups("reader", &["readers"]))
        .await
        .unwrap();
    let (code, message) = refused(&reader, sql).await;
    assert_eq!(code, "42501");
    assert!(message.contains("read-only"), "{message}");
    writer.batch_execute(sql).await.unwrap();
}

#[tokio::test]
async fn guard_functions_judges_each_set_config_name_although_the_shapes_match() {
    let gw = gateway(stock()).await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    client
        .batch_execute("SELECT set_config('work_mem', '8MB', false)")
        .await
        .unwrap();
    let (code, _) = refused(&client, "SELECT set_config('role', 'postgres', false)").await;
    assert_eq!(code, "42501");
    client
        .batch_execute("SELECT set_config('work_mem', '4MB', false)")
        .await
        .unwrap();
}

#[tokio::test]
async fn python_plugin_refuses_configured_tables_and_exempts_its_groups() {
    let gw = gateway(vec![PluginSpec::with(
        "deny-tables-py",
        "deny-tables-py",
        // An interpreter in a component: milliseconds to start, so a budget above the
        // default 20 ms (and the tests share two cores with the build).
        "[config]\ntables = \"items\"\nexempt_groups = \"auditors\"\n[limits]\ntimeout = \"1s\"\n",
    )])
    .await;
    let agent = gw.connect("agent", &gw.token("agent")).await.unwrap();
    for sql in [
        "SELECT * FROM items",
        "SELECT * FROM public.items",
        "WITH x AS (SELECT id FROM items) SELECT * FROM x",
    ] {
        let (code, message) = refused(&agent, sql).await;
        assert_eq!(code, "42501", "{sql}");
        assert!(message.contains("\"deny-tables-py\""), "{message}");
        assert!(message.contains("off limits"), "{message}");
    }
    agent.batch_execute("SELECT 1").await.unwrap();
    let auditor = gw
        .connect("auditor", &gw.token_with_groups("auditor", &["auditors"]))
        .await
        .unwrap();
    let row = auditor
        .query_one("SELECT count(*) FROM items WHERE id <= 100", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 100);
}

/// `sluice plugins check`: what a plugin makes of a statement before it is deployed, readable,
/// with the exit status a script can test.
#[tokio::test]
async fn plugins_check_shows_the_analysis_and_the_decision_and_fails_on_deny() {
    let check = |plugin: &str, sql: &str, extra: &[&str]| {
        std::process::Command::new(sluice_integration_tests::sluice_binary())
            .args(["plugins", "check"])
            .arg(sluice_integration_tests::built_plugin(plugin))
            .args(["--sql", sql])
            .args(extra)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let out = check("no-ddl", "EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("kind:         ddl"), "{stdout}");
    assert!(stdout.contains("decision:       deny"), "{stdout}");
    assert!(
        out.stderr.is_empty(),
        "no log lines: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = check("no-ddl", "SELECT 1", &["--json"]);
    assert!(out.status.success());
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["decision"]["decision"], "allow");
    assert_eq!(answer["statements"][0]["kind"], "select");
    assert_eq!(
        answer["statements"][0]["fingerprint"]
            .as_str()
            .unwrap()
            .len(),
        16
    );
}
