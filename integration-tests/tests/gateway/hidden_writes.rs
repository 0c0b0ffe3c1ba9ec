//! Writes and schema changes hidden inside other statements meet the stock plugins as what they
//! are: MERGE that can empty a table, EXPLAIN ANALYZE of DDL, EXECUTE of a prepared write (by
//! SQL or a driver's Parse, through SQL or a protocol Bind), each in spellings a guard reading
//! only the outer statement would miss. Every refusal is checked on a direct connection too:
//! nothing ran.

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use sluice_integration_tests::{
    DATABASE, GatewayOptions, PluginSpec, RawClient, TestGateway, as_superuser, http, postgres,
    query_message, sqlstate, tags,
};

const ROWS: i64 = 10;

/// A fresh table of `ROWS` rows for one test.
async fn table(name: &str) {
    as_superuser(&format!(
        "DROP TABLE IF EXISTS {name};
             CREATE TABLE {name} (id int PRIMARY KEY, a int);
             INSERT INTO {name} SELECT g, g FROM generate_series(1, {ROWS}) g;
             GRANT ALL ON {name} TO PUBLIC;"
    ))
    .await;
}

/// Rows of `name` and the sum of its `a`, read directly from Postgres.
async fn direct(name: &str) -> (i64, i64) {
    let admin = postgres()
        .server
        .superuser_client(DATABASE)
        .await
        .expect("superuser connects");
    let row = admin
        .query_one(
            &format!("SELECT count(*), coalesce(sum(a), 0)::bigint FROM {name}"),
            &[],
        )
        .await
        .expect("count");
    (row.get(0), row.get(1))
}

async fn relation_exists(name: &str) -> bool {
    let admin = postgres()
        .server
        .superuser_client(DATABASE)
        .await
        .expect("superuser connects");
    admin
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .await
        .expect("to_regclass")
        .get(0)
}

fn guarded() -> GatewayOptions {
    GatewayOptions {
        plugins: vec![
            PluginSpec::stock("no-ddl"),
            PluginSpec::stock("safe-writes"),
        ],
        ..GatewayOptions::default()
    }
}

#[tokio::test]
async fn a_merge_that_can_reach_every_row_is_refused_in_every_wrapping() {
    table("hw_merge").await;
    let gw = TestGateway::start_with(guarded()).await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    for sql in [
        "MERGE INTO hw_merge USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE",
        "MERGE INTO hw_merge t USING hw_merge s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = 0",
        "merge into hw_merge using (values (1)) v(x) on 1 = 1 when matched then delete",
        "MERGE INTO hw_merge USING (SELECT 1 AS id) s ON hw_merge.id = s.id \
         WHEN NOT MATCHED BY SOURCE THEN DELETE",
        "WITH gone AS (MERGE INTO hw_merge USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE \
         RETURNING *) SELECT count(*) FROM gone",
        "EXPLAIN (ANALYZE, COSTS off) MERGE INTO hw_merge USING (SELECT 1) s ON true \
         WHEN MATCHED THEN DELETE",
        "PREPARE wipe AS MERGE INTO hw_merge USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE",
        "COPY (MERGE INTO hw_merge USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE \
         RETURNING *) TO STDOUT",
        "DELETE FROM hw_merge WHERE true",
        "UPDATE hw_merge SET a = 0 WHERE 1 = 1",
    ] {
        let err = client.simple_query(sql).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{sql}: {err}");
        // The extended protocol reaches the same check at Parse.
        let err = client.execute(sql, &[]).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{sql}: {err}");
    }
    assert_eq!(direct("hw_merge").await, (ROWS, 55), "nothing ran");
    // A MERGE whose join pins the target runs.
    client
        .simple_query(
            "MERGE INTO hw_merge t USING (VALUES (3, 300)) v(id, a) ON t.id = v.id \
             WHEN MATCHED THEN UPDATE SET a = v.a",
        )
        .await
        .unwrap();
    assert_eq!(direct("hw_merge").await, (ROWS, 55 - 3 + 300));
}

#[tokio::test]
async fn explain_analyze_of_ddl_is_ddl_to_no_ddl() {
    let gw = TestGateway::start_with(guarded()).await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    for (sql, created) in [
        (
            "EXPLAIN ANALYZE CREATE TABLE hw_ctas AS SELECT * FROM items",
            "hw_ctas",
        ),
        (
            "explain (analyze true, format json) create table hw_ctas2 as select 1",
            "hw_ctas2",
        ),
        ("EXPLAIN (ANALYZE) SELECT 1 AS x INTO hw_into", "hw_into"),
        (
            "EXPLAIN ANALYZE CREATE MATERIALIZED VIEW hw_mv AS SELECT 1",
            "hw_mv",
        ),
    ] {
        let err = client.simple_query(sql).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{sql}: {err}");
        assert!(
            err.as_db_error().unwrap().message().contains("no-ddl"),
            "{err}"
        );
        assert!(!relation_exists(created).await, "{sql} created {created}");
    }
    // Plain EXPLAIN runs nothing and passes.
    client
        .simple_query("EXPLAIN CREATE TABLE hw_never AS SELECT 1")
        .await
        .unwrap();
    assert!(!relation_exists("hw_never").await);
}

async fn approve_writes_gateway() -> TestGateway {
    TestGateway::start_with(GatewayOptions {
        plugins: vec![PluginSpec::stock("approve-writes")],
        extra_toml: "[approvals]\ntimeout = \"30s\"\n".into(),
        ..GatewayOptions::default()
    })
    .await
}

/// Expects the approval notice, denies the request over the API and expects the 42501.
async fn held_then_denied(gw: &TestGateway, raw: &mut RawClient, what: &str) -> String {
    let notice = raw.recv().await.expect("a notice");
    assert_eq!(
        notice.tag,
        b'N',
        "{what}: the statement is held, not: {}",
        notice.message()
    );
    let text = notice.message();
    let id = text
        .split_whitespace()
        .find(|w| w.starts_with("apr-"))
        .unwrap_or_else(|| panic!("{what}: {text}"))
        .to_owned();
    let view = gw.approval(&id, "auditor", &["approvers"]).await;
    let shown = view["statement"].as_str().unwrap_or_default().to_owned();
    let token = gw.token_with_groups("bob", &["approvers"]);
    let (code, body) = http(
        gw.admin,
        "POST",
        &format!("/v1/approvals/{id}/deny"),
        Some(&token),
        Some(r#"{"reason":"no"}"#),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let reply = raw.until_ready().await;
    let error = reply
        .iter()
        .find(|m| m.tag == b'E')
        .unwrap_or_else(|| panic!("{what}: {}", tags(&reply)));
    assert_eq!(error.sqlstate(), "42501", "{what}");
    shown
}

#[tokio::test]
async fn sql_execute_of_a_name_a_driver_parsed_is_held_as_the_write_it_runs() {
    table("hw_parsed").await;
    let gw = approve_writes_gateway().await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    // A named Parse of a write: preparing runs nothing, so it passes.
    let mut out = BytesMut::new();
    frontend::parse("s1", "DELETE FROM hw_parsed WHERE id > $1", [], &mut out).unwrap();
    frontend::sync(&mut out);
    assert_eq!(tags(&raw.exchange(&out).await), "1Z");
    // The same statement by its name through SQL, plain and under EXPLAIN ANALYZE.
    for sql in ["EXECUTE s1(0)", "EXPLAIN ANALYZE EXECUTE s1(0)"] {
        raw.send(&query_message(sql)).await;
        let shown = held_then_denied(&gw, &mut raw, sql).await;
        assert!(
            shown.contains("s1 was prepared as: DELETE FROM hw_parsed"),
            "approvers see what runs: {shown}"
        );
    }
    assert_eq!(direct("hw_parsed").await.0, ROWS, "nothing ran");
}

#[tokio::test]
async fn a_protocol_bind_of_a_sql_prepared_write_is_held_as_the_write_it_runs() {
    table("hw_bound").await;
    let gw = approve_writes_gateway().await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let reply = raw
        .exchange(&query_message(
            "PREPARE wipe(int) AS DELETE FROM hw_bound WHERE id > $1",
        ))
        .await;
    assert_eq!(tags(&reply), "CZ", "a string that only prepares passes");
    let mut out = BytesMut::new();
    sluice_integration_tests::bind_statement_and_execute(&mut out, "wipe", &["0"]);
    frontend::sync(&mut out);
    raw.send(&out).await;
    held_then_denied(&gw, &mut raw, "Bind of wipe").await;
    assert_eq!(direct("hw_bound").await.0, ROWS, "nothing ran");
}

#[tokio::test]
async fn a_name_the_gateway_did_not_see_prepared_is_refused() {
    let gw = TestGateway::start_with(guarded()).await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let err = client.simple_query("EXECUTE ghost").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("was not prepared through this session"),
        "{err}"
    );
    // Deallocated names are forgotten with their definitions; a new one is judged afresh.
    client
        .simple_query("PREPARE q AS SELECT 1; DEALLOCATE q")
        .await
        .unwrap();
    let err = client.simple_query("EXECUTE q").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    table("hw_redefined").await;
    let err = client
        .simple_query("PREPARE q AS DELETE FROM hw_redefined")
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "42501",
        "safe-writes refuses it when prepared"
    );
    client
        .simple_query("PREPARE q AS SELECT count(*) FROM hw_redefined; EXECUTE q")
        .await
        .unwrap();
    assert_eq!(direct("hw_redefined").await.0, ROWS);
}

/// Found by an attacker's review: ways to make the gateway's idea of a name differ from
/// Postgres', each of which ran a held write unheld. Every one is held now.
#[tokio::test]
async fn a_name_means_to_the_gateway_what_it_means_to_postgres() {
    table("hw_desync").await;
    let gw = approve_writes_gateway().await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;

    // Names longer than 63 bytes: Postgres keeps the first 63, so these two are one name.
    let long = "a".repeat(63);
    let mut out = BytesMut::new();
    frontend::parse(
        &format!("{long}1"),
        "DELETE FROM hw_desync WHERE id > $1",
        [],
        &mut out,
    )
    .unwrap();
    frontend::sync(&mut out);
    assert_eq!(tags(&raw.exchange(&out).await), "1Z");
    let mut out = BytesMut::new();
    sluice_integration_tests::bind_statement_and_execute(&mut out, &format!("{long}2"), &["0"]);
    frontend::sync(&mut out);
    raw.send(&out).await;
    held_then_denied(&gw, &mut raw, "Bind of the 63-byte alias").await;

    // A DEALLOCATE an error skipped: the name still holds the DELETE.
    let reply = raw
        .exchange(&query_message(
            "PREPARE x(int) AS DELETE FROM hw_desync WHERE id > $1",
        ))
        .await;
    assert_eq!(tags(&reply), "CZ");
    let reply = raw
        .exchange(&query_message("SELECT 1/0; DEALLOCATE x"))
        .await;
    assert_eq!(reply[0].tag, b'E');
    let mut out = BytesMut::new();
    sluice_integration_tests::bind_statement_and_execute(&mut out, "x", &["0"]);
    frontend::sync(&mut out);
    raw.send(&out).await;
    held_then_denied(&gw, &mut raw, "Bind of x after a skipped DEALLOCATE").await;
    // A re-PREPARE Postgres refuses does not replace it either.
    let reply = raw
        .exchange(&query_message("PREPARE x(int) AS SELECT $1"))
        .await;
    assert_eq!(reply[0].sqlstate(), "42P05", "Postgres keeps the DELETE");
    raw.send(&query_message("EXECUTE x(0)")).await;
    held_then_denied(&gw, &mut raw, "EXECUTE x after a refused re-PREPARE").await;

    // A statement parsed as `EXECUTE y` runs what y is when it is bound, not when parsed.
    let reply = raw.exchange(&query_message("PREPARE y AS SELECT 1")).await;
    assert_eq!(tags(&reply), "CZ");
    let mut out = BytesMut::new();
    frontend::parse("runs_y", "EXECUTE y", [], &mut out).unwrap();
    frontend::sync(&mut out);
    assert_eq!(tags(&raw.exchange(&out).await), "1Z");
    let reply = raw
        .exchange(&query_message(
            "DEALLOCATE y; PREPARE y AS DELETE FROM hw_desync",
        ))
        .await;
    assert_eq!(tags(&reply), "CCZ");
    let mut out = BytesMut::new();
    sluice_integration_tests::bind_statement_and_execute(&mut out, "runs_y", &[]);
    frontend::sync(&mut out);
    raw.send(&out).await;
    held_then_denied(&gw, &mut raw, "Bind of runs_y after y changed").await;

    // A Bind of a name the gateway never saw prepared.
    let mut out = BytesMut::new();
    sluice_integration_tests::bind_statement_and_execute(&mut out, "never_seen", &[]);
    frontend::sync(&mut out);
    let reply = raw.exchange(&out).await;
    assert_eq!(reply[0].sqlstate(), "42501", "{}", reply[0].message());

    assert_eq!(direct("hw_desync").await.0, ROWS, "nothing ran");
}

#[tokio::test]
async fn a_call_of_a_volatile_user_defined_function_is_a_write_to_the_stock_guards() {
    table("hw_functions").await;
    let admin = postgres().server.superuser_client(DATABASE).await.unwrap();
    admin
        .batch_execute(
            "CREATE OR REPLACE FUNCTION hw_purge(int) RETURNS int LANGUAGE sql VOLATILE
                 AS $$ DELETE FROM hw_functions WHERE id >= $1; SELECT 1 $$;
             CREATE OR REPLACE FUNCTION hw_label(int) RETURNS text LANGUAGE sql STABLE
                 AS $$ SELECT 'row ' || $1 $$;",
        )
        .await
        .unwrap();
    let gw = TestGateway::start_with(GatewayOptions {
        plugins: vec![PluginSpec::with(
            "read-only",
            "read-only",
            "[config]\ngroups = \"*\"\n",
        )],
        ..GatewayOptions::default()
    })
    .await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    // Looks like a read; deletes. In every spelling and through the extended protocol.
    for sql in [
        "SELECT hw_purge(1)",
        "SELECT * FROM hw_functions WHERE hw_purge(1) = 1",
        "SELECT public.hw_purge(1)",
        "WITH x AS (SELECT hw_purge(1)) SELECT 1",
    ] {
        let e = client.simple_query(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}");
    }
    let e = client
        .query("SELECT hw_purge($1)", &[&1i32])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert_eq!(direct("hw_functions").await.0, ROWS, "nothing was deleted");
    // A function declared STABLE cannot write: a read stays a read.
    let rows = client.query("SELECT hw_label(2)", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "row 2");
}
