//! The relay: what drivers and psql do through the gateway must behave as against Postgres.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use postgres_protocol::message::frontend;
use sluice_integration_tests::{RawClient, TestGateway, tags};

#[tokio::test]
async fn multi_statement_simple_query_returns_every_result() {
    let gw = TestGateway::start().await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let messages = client
        .simple_query(
            "SELECT 1 AS a; SELECT 'two' AS b; SELECT count(*) FROM items WHERE id <= 100",
        )
        .await
        .unwrap();
    let rows: Vec<String> = messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(rows, ["1", "two", "100"]);
}

#[tokio::test]
async fn pipelined_extended_queries_return_in_order() {
    let gw = TestGateway::start().await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let statement = client
        .prepare("SELECT name FROM items WHERE id = $1")
        .await
        .unwrap();
    // tokio-postgres pipelines concurrent queries on one connection.
    let queries = (1..=50).map(|id| {
        let client = &client;
        let statement = &statement;
        async move { client.query_one(statement, &[&id]).await }
    });
    let rows = futures_util::future::try_join_all(queries).await.unwrap();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.get::<_, String>(0), format!("item {}", i + 1));
    }
}

#[tokio::test]
async fn error_mid_pipeline_skips_to_sync_like_postgres() {
    let gw = TestGateway::start().await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let mut out = BytesMut::new();
    for sql in [
        "SELECT 1",
        "SELECT 1 / (id - id) FROM items WHERE id = 1",
        "SELECT 3",
    ] {
        frontend::parse("", sql, None, &mut out).unwrap();
        sluice_integration_tests::bind_and_execute(&mut out, &[]);
    }
    frontend::sync(&mut out);
    raw.send(&out).await;
    let reply = raw.until_ready().await;
    // Parse/Bind/DataRow/Complete for the first, Parse/Bind/Error for the second, nothing for
    // the third, then one ReadyForQuery.
    assert_eq!(tags(&reply), "12DC12EZ");
    assert_eq!(reply[6].sqlstate(), "22012");
    // The session is usable after Sync.
    out.clear();
    frontend::query("SELECT 4", &mut out).unwrap();
    raw.send(&out).await;
    assert_eq!(tags(&raw.until_ready().await), "TDCZ");
}

#[tokio::test]
async fn transaction_status_follows_begin_error_and_rollback() {
    let gw = TestGateway::start().await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let mut status = Vec::new();
    for sql in ["BEGIN", "SELECT 1", "SELECT nope", "SELECT 1", "ROLLBACK"] {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).unwrap();
        raw.send(&out).await;
        let reply = raw.until_ready().await;
        status.push(reply.last().unwrap().body[0] as char);
    }
    assert_eq!(status, ['T', 'T', 'E', 'E', 'I']);
}

#[tokio::test]
async fn copy_from_stdin_and_to_stdout_round_trip() {
    let gw = TestGateway::start().await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    client
        .batch_execute("CREATE TEMP TABLE copied (id int, note text)")
        .await
        .unwrap();
    let sink = client.copy_in("COPY copied FROM STDIN").await.unwrap();
    let lines: Vec<Result<bytes::Bytes, tokio_postgres::Error>> = (0..10_000)
        .map(|i| Ok(bytes::Bytes::from(format!("{i}\tnote {i}\n"))))
        .collect();
    futures_util::pin_mut!(sink);
    sink.as_mut()
        .send_all(&mut futures_util::stream::iter(lines))
        .await
        .unwrap();
    let copied = sink.finish().await.unwrap();
    assert_eq!(copied, 10_000);

    let out = client
        .copy_out("COPY (SELECT * FROM copied ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = out.try_collect().await.unwrap();
    let text: String = chunks
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    assert_eq!(text.lines().count(), 10_000);
    assert_eq!(text.lines().nth(9_999), Some("9999\tnote 9999"));
}

#[tokio::test]
async fn psql_copy_both_ways() {
    let gw = TestGateway::start().await;
    let token = gw.token("agent");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rows.csv");
    std::fs::write(&file, "1,one\n2,two\n3,three\n").unwrap();
    let script = format!(
        "CREATE TEMP TABLE t (id int, word text);\n\\copy t FROM '{}' WITH (FORMAT csv)\n\\copy (SELECT word FROM t ORDER BY id) TO STDOUT",
        file.display()
    );
    let script_file = dir.path().join("script.sql");
    std::fs::write(&script_file, script).unwrap();
    let out = gw
        .psql(
            "agent",
            &token,
            "require",
            &["-q", "-f", script_file.to_str().unwrap()],
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\nthree\n");
}

#[tokio::test]
async fn cancel_request_with_the_gateway_key_cancels_the_upstream_query() {
    let gw = TestGateway::start().await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let cancel = client.cancel_token();
    let started = Instant::now();
    let query = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(20)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cancel
        .cancel_query(sluice_integration_tests::tls_connector())
        .await
        .unwrap();
    let err = query.await.unwrap().expect_err("cancelled");
    assert_eq!(sluice_integration_tests::sqlstate(&err), "57014");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn cancel_request_with_a_forged_key_does_nothing() {
    let gw = TestGateway::start().await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let (pid, secret) = raw.key;
    let mut out = BytesMut::new();
    frontend::query("SELECT pg_sleep(1.5), 'finished'", &mut out).unwrap();
    raw.send(&out).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for forged in [(pid, secret.wrapping_add(1)), (pid.wrapping_add(1), secret)] {
        RawClient::cancel_with(&gw, forged).await;
    }
    let reply = raw.until_ready().await;
    assert_eq!(tags(&reply), "TDCZ", "the query must finish normally");
}

#[tokio::test]
async fn listen_notify_reaches_the_listening_client() {
    let gw = TestGateway::start().await;
    let token = gw.token("agent");
    let mut listener = RawClient::connect(&gw, "agent", &token).await;
    let mut out = BytesMut::new();
    frontend::query("LISTEN jobs", &mut out).unwrap();
    listener.send(&out).await;
    listener.until_ready().await;
    let notifier = gw.connect("agent", &token).await.unwrap();
    notifier
        .batch_execute("NOTIFY jobs, 'job 42 done'")
        .await
        .unwrap();
    let msg = listener.recv().await.expect("notification");
    assert_eq!(msg.tag, b'A');
    let body = String::from_utf8_lossy(&msg.body[4..]).into_owned();
    assert!(body.starts_with("jobs\0job 42 done"), "{body:?}");
}

#[tokio::test]
async fn notices_and_parameter_status_are_relayed() {
    let gw = TestGateway::start().await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let mut out = BytesMut::new();
    frontend::query(
        "DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$; SET application_name = 'renamed'",
        &mut out,
    )
    .unwrap();
    raw.send(&out).await;
    let reply = raw.until_ready().await;
    let notice = reply
        .iter()
        .find(|m| m.tag == b'N')
        .expect("notice relayed");
    assert!(String::from_utf8_lossy(&notice.body).contains("hello from plpgsql"));
    let status = reply
        .iter()
        .find(|m| m.tag == b'S')
        .expect("ParameterStatus relayed");
    assert!(String::from_utf8_lossy(&status.body).starts_with("application_name\0renamed"));
}

#[tokio::test]
async fn pgbench_runs_through_the_gateway() {
    let gw = TestGateway::start().await;
    let token = gw.token("agent");
    let script = sluice_integration_tests::pgbench_script(
        "\\set id random(1, 100)\nSELECT name FROM items WHERE id = :id;\n",
    );
    let out = sluice_integration_tests::pgbench(
        gw.port(),
        "agent",
        &token,
        &["-n", "-c", "4", "-j", "2", "-t", "50", "-M", "prepared"],
        script.path(),
    )
    .output()
    .await
    .unwrap();
    let stdout = sluice_integration_tests::assert_pgbench_clean(&out);
    assert!(
        stdout.contains("number of transactions actually processed: 200/200"),
        "{stdout}"
    );
}

#[tokio::test]
async fn query_results_stream_in_order_to_several_clients_at_once() {
    let gw = TestGateway::start().await;
    let token = gw.token("agent");
    let tasks = (0..8).map(|n| {
        let config = gw.client_config("agent", &token);
        tokio::spawn(async move {
            let client = sluice_integration_tests::connect_with(config)
                .await
                .unwrap();
            let rows = client
                .query_raw(
                    "SELECT g FROM generate_series(1, 5000) g",
                    std::iter::empty::<i32>(),
                )
                .await
                .unwrap();
            futures_util::pin_mut!(rows);
            let mut expected = 1;
            while let Some(row) = rows.next().await {
                assert_eq!(row.unwrap().get::<_, i32>(0), expected, "client {n}");
                expected += 1;
            }
            expected - 1
        })
    });
    for count in futures_util::future::join_all(tasks).await {
        assert_eq!(count.unwrap(), 5000);
    }
}
