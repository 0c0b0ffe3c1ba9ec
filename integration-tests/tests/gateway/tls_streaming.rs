//! Large and many results through TLS, the way users run the gateway (client TLS required,
//! audit on, stock plugins with masking) and bare: clients that read asynchronously (pgbench,
//! which is libpq's asynchronous API; a tokio-postgres pipeline) or slowly get every row, with
//! TLS on the upstream leg too. Every run has a deadline far above its length, so a session that
//! stalls fails its test within half a minute instead of hanging the suite.
//!
//! Found by `pgbench -f big.sql` (`SELECT * FROM people`, 10,000 rows) over `sslmode=require`:
//! the gateway wrote 16 KiB TLS records, libpq's asynchronous reader took the part of one that
//! fit its buffer and polled the socket for the rest, which OpenSSL already held. The record
//! size tests pin the cause; the client tests show what a user would have seen.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice::config::UpstreamTlsMode;
use sluice::tls::MAX_RECORD_PLAINTEXT;
use sluice_integration_tests::{
    GatewayOptions, MeteredStream, PluginSpec, RawClient, TestGateway, TlsRecords, UpstreamMeter,
    as_superuser, assert_pgbench_clean, http, pgbench, pgbench_script, query_message,
};
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::tls::MakeTlsConnect;

const ROWS: usize = 10_000;

/// What TLS 1.3 (RFC 8446 §5.2) lets a record's ciphertext exceed its plaintext by.
const RECORD_EXPANSION: usize = 256;

/// Ten times what any run here needs on a loaded two-core machine: past it, a session stalled.
const DEADLINE: Duration = Duration::from_secs(30);

/// `tls_people`: the reproduction's table, created once per test binary.
async fn fixtures() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        as_superuser(&format!(
            "CREATE TABLE tls_people (id int PRIMARY KEY, email text, card text, digest text);
                 INSERT INTO tls_people SELECT g, 'person' || g || '@example.com',
                     lpad((g * 7919)::text, 16, '4'), md5(g::text)
                     FROM generate_series(1, {ROWS}) g;
                 GRANT ALL ON tls_people TO PUBLIC;"
        ))
        .await;
    })
    .await;
}

/// Client TLS required, audit on (`write`), the stock policy plugins and `mask-pii-columns`
/// masking two of the table's columns.
fn as_users_run_it() -> GatewayOptions {
    GatewayOptions {
        plugins: vec![
            PluginSpec::stock("no-ddl"),
            PluginSpec::stock("safe-writes"),
            PluginSpec::stock("guard-functions"),
            PluginSpec::stock("guard-roles"),
            PluginSpec::with(
                "mask-pii-columns",
                "mask-pii-columns",
                "[config]\nrules = \"tls_people.email=hash, tls_people.card=partial(0,4)\"\n",
            ),
        ],
        ..GatewayOptions::default()
    }
}

/// Client TLS required; no plugins, no audit.
fn bare() -> GatewayOptions {
    GatewayOptions {
        extra_toml: "[audit]\nenabled = false\n".into(),
        ..GatewayOptions::default()
    }
}

fn with_upstream_tls(options: GatewayOptions) -> GatewayOptions {
    GatewayOptions {
        upstream_tls: UpstreamTlsMode::Require,
        ..options
    }
}

async fn gateway(options: GatewayOptions) -> TestGateway {
    fixtures().await;
    TestGateway::start_with(options).await
}

/// pgbench for three seconds with `clients`, each transaction the whole table, over TLS:
/// finishes cleanly, well within the deadline.
async fn pgbench_whole_table(gw: &TestGateway, clients: usize) {
    let script = pgbench_script("SELECT * FROM tls_people;\n");
    let clients = clients.to_string();
    let jobs = if clients == "1" { "1" } else { "2" };
    let run = pgbench(
        gw.port(),
        "agent",
        &gw.token("agent"),
        &["-n", "-c", &clients, "-j", jobs, "-T", "3"],
        script.path(),
    )
    .output();
    let out = tokio::time::timeout(DEADLINE, run)
        .await
        .unwrap_or_else(|_| {
            panic!("pgbench -c {clients} -T 3 still running after {DEADLINE:?}: a session stalled")
        })
        .expect("pgbench runs");
    let report = assert_pgbench_clean(&out);
    assert!(
        !report.contains("number of transactions actually processed: 0/"),
        "{report}"
    );
}

#[tokio::test]
async fn pgbench_reads_large_results_over_tls_as_users_run_the_gateway() {
    let gw = gateway(as_users_run_it()).await;
    pgbench_whole_table(&gw, 1).await;
    pgbench_whole_table(&gw, 4).await;
}

#[tokio::test]
async fn pgbench_reads_large_results_over_tls_without_plugins_or_audit() {
    let gw = gateway(bare()).await;
    pgbench_whole_table(&gw, 1).await;
    pgbench_whole_table(&gw, 4).await;
}

#[tokio::test]
async fn pgbench_reads_large_results_with_tls_on_both_legs() {
    let gw = gateway(with_upstream_tls(as_users_run_it())).await;
    pgbench_whole_table(&gw, 4).await;
}

/// Sixteen whole-table queries in flight at once on one connection (tokio-postgres pipelines
/// requests that are awaited together): every row of every answer arrives, masked.
async fn pipeline_of_whole_tables(gw: &TestGateway) {
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let statement = client
        .prepare("SELECT id, email, card, digest FROM tls_people ORDER BY id")
        .await
        .unwrap();
    let queries = (0..16).map(|_| client.query(&statement, &[]));
    let answers = tokio::time::timeout(DEADLINE, futures_util::future::try_join_all(queries))
        .await
        .unwrap_or_else(|_| panic!("the pipeline was not answered within {DEADLINE:?}"))
        .unwrap();
    for rows in answers {
        assert_eq!(rows.len(), ROWS);
        let last = &rows[ROWS - 1];
        assert_eq!(last.get::<_, i32>(0), ROWS as i32);
        assert!(last.get::<_, &str>(1).starts_with("h:"), "email is hashed");
        assert_eq!(last.get::<_, String>(3).len(), 32, "digest passes unmasked");
    }
}

#[tokio::test]
async fn a_pipeline_of_large_results_arrives_whole_over_tls() {
    let gw = gateway(as_users_run_it()).await;
    pipeline_of_whole_tables(&gw).await;
}

#[tokio::test]
async fn a_pipeline_of_large_results_arrives_whole_with_tls_on_both_legs() {
    let gw = gateway(with_upstream_tls(as_users_run_it())).await;
    pipeline_of_whole_tables(&gw).await;
}

#[tokio::test]
async fn tls_records_to_the_client_carry_at_most_8_kib() {
    let gw = gateway(bare()).await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port()))
        .await
        .unwrap();
    // The gateway's first byte is its answer to the SSLRequest, in the clear.
    let records = Arc::new(Mutex::new(TlsRecords::after(1)));
    let stream = MeteredStream {
        inner: tcp,
        records: records.clone(),
    };
    let tls = MakeTlsConnect::<MeteredStream>::make_tls_connect(
        &mut sluice_integration_tests::tls_connector(),
        "localhost",
    )
    .unwrap();
    let (client, connection) = gw
        .client_config("agent", &gw.token("agent"))
        .connect_raw(stream, tls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let answer = client
        .simple_query("SELECT * FROM tls_people")
        .await
        .unwrap();
    let rows = answer
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(rows, ROWS);
    let seen = records.lock().unwrap();
    assert!(
        seen.largest <= MAX_RECORD_PLAINTEXT + RECORD_EXPANSION,
        "a {}-byte TLS record reached the client",
        seen.largest
    );
    // ~1 MB went by in records filled to the bound: it is the bound that limits them.
    assert!(seen.application_data > 100, "{}", seen.application_data);
    assert!(seen.largest > MAX_RECORD_PLAINTEXT, "{}", seen.largest);
}

#[tokio::test]
async fn tls_records_to_the_upstream_carry_at_most_8_kib() {
    fixtures().await;
    let meter = UpstreamMeter::start().await;
    let gw = TestGateway::start_with(GatewayOptions {
        upstream_port: Some(meter.port),
        ..with_upstream_tls(bare())
    })
    .await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    // A 200 KB parameter crosses the upstream leg in one Bind message.
    let big = "x".repeat(200_000);
    let row = client
        .query_one("SELECT length($1::text)", &[&big])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 200_000);
    let seen = meter.records.lock().unwrap();
    assert!(
        seen.largest <= MAX_RECORD_PLAINTEXT + RECORD_EXPANSION,
        "a {}-byte TLS record reached the upstream",
        seen.largest
    );
    assert!(seen.application_data > 20, "{}", seen.application_data);
    assert!(seen.largest > MAX_RECORD_PLAINTEXT, "{}", seen.largest);
}

/// `sluice_<name>` from `/metrics`.
async fn metric(gw: &TestGateway, name: &str) -> f64 {
    let (code, body) = http(gw.admin, "GET", "/metrics", None, None).await;
    assert_eq!(code, 200);
    body.lines()
        .find_map(|line| line.strip_prefix(&format!("sluice_{name} ")))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no sluice_{name} in /metrics:\n{body}"))
}

#[tokio::test]
async fn a_client_that_stops_reading_is_reported_stalled_and_then_gets_every_row() {
    let gw = gateway(GatewayOptions {
        extra_server_toml: "client_write_stall = \"300ms\"\n".into(),
        ..as_users_run_it()
    })
    .await;
    let mut client = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    // ~40 MB: far more than the socket buffers of both ends hold.
    const BIG: usize = 40_000;
    client
        .send(&query_message(&format!(
            "SELECT g, repeat('x', 1000) FROM generate_series(1, {BIG}) g"
        )))
        .await;
    // Nothing read: the gateway's write to this client waits, and is reported.
    let reported = tokio::time::timeout(DEADLINE, async {
        while metric(&gw, "client_writes_stalled").await < 1.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(reported.is_ok(), "the stalled write was never reported");
    assert!(metric(&gw, "client_write_stalls_total").await >= 1.0);

    // Now a slow reader: a message at a time, with a pause every thousand rows.
    let mut rows = 0;
    let mut tags = Vec::new();
    while let Some(msg) = client.recv().await {
        match msg.tag {
            b'D' => {
                rows += 1;
                if rows % 1000 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            b'Z' => {
                tags.push('Z');
                break;
            }
            tag => tags.push(tag as char),
        }
    }
    assert_eq!(rows, BIG);
    assert_eq!(tags, ['T', 'C', 'Z']);
    assert_eq!(metric(&gw, "client_writes_stalled").await, 0.0);
    // The session goes on.
    let answer = client.exchange(&query_message("SELECT 1")).await;
    assert_eq!(sluice_integration_tests::tags(&answer), "TDCZ");
}
