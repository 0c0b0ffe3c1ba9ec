//! Runaway statements stop at the gateway's budget (`[limits] statement_timeout`): Postgres
//! enforces it from login, the client may lower it but never lift it (SET, set_config,
//! `options`), and when something the parser cannot see into lifts it anyway, the gateway
//! cancels the statement itself.

use std::time::{Duration, Instant};

use sluice_integration_tests::{GatewayOptions, TestGateway, error_message, sqlstate};

async fn gateway() -> TestGateway {
    TestGateway::start_with(GatewayOptions {
        extra_toml: "[limits]\nstatement_timeout = \"1s\"\nstatement_timeout_grace = \"500ms\"\n"
            .into(),
        ..GatewayOptions::default()
    })
    .await
}

/// `SHOW statement_timeout` through the gateway.
async fn shown_timeout(client: &tokio_postgres::Client) -> String {
    client
        .simple_query("SHOW statement_timeout")
        .await
        .unwrap()
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("a row")
}

/// Runs `sql`, expecting 57014 well before the statement would have ended by itself.
async fn stopped(client: &tokio_postgres::Client, sql: &str) {
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(20), client.simple_query(sql))
        .await
        .unwrap_or_else(|_| panic!("{sql} was not stopped"))
        .unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{sql}: {err}");
    assert!(started.elapsed() < Duration::from_secs(15), "{sql}");
}

#[tokio::test]
async fn statements_stop_at_the_budget() {
    let gw = gateway().await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    assert_eq!(shown_timeout(&client).await, "1s");
    stopped(&client, "SELECT pg_sleep(60)").await;
    stopped(
        &client,
        "WITH RECURSIVE forever(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM forever) \
         SELECT count(*) FROM forever",
    )
    .await;
    // The session goes on.
    client.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn the_budget_may_be_lowered_but_never_lifted() {
    let gw = gateway().await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    for sql in [
        "SET statement_timeout = 0",
        "SET statement_timeout = '10min'",
        "SET statement_timeout = 0.4",
        "SET statement_timeout = '400us'",
        "SET LOCAL statement_timeout TO 5000",
        "SELECT set_config('statement_timeout', '0', false)",
        "SELECT set_config('statement_timeout', current_setting('work_mem'), false)",
        "CREATE FUNCTION slow() RETURNS void LANGUAGE sql SET statement_timeout = 0 AS 'SELECT pg_sleep(60)'",
    ] {
        let err = client.simple_query(sql).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{sql}: {err}");
        assert!(error_message(&err).contains("budget"), "{sql}: {err}");
    }
    client
        .batch_execute("SET statement_timeout = '500ms'; RESET statement_timeout")
        .await
        .unwrap();
    // At login through `options` too.
    let mut config = gw.client_config("agent", &gw.token("agent"));
    config.options("-c statement_timeout=0");
    let err = sluice_integration_tests::connect_with(config)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
    let mut config = gw.client_config("agent", &gw.token("agent"));
    config.options("-c statement_timeout=300ms");
    let lowered = sluice_integration_tests::connect_with(config)
        .await
        .unwrap();
    assert_eq!(shown_timeout(&lowered).await, "300ms");
}

#[tokio::test]
async fn a_timeout_too_long_for_any_clock_is_refused_as_a_lift_and_the_session_goes_on() {
    let gw = gateway().await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let err = client
        .simple_query("SET statement_timeout = '99999999999999999999999999'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
    assert_eq!(shown_timeout(&client).await, "1s");
    let mut config = gw.client_config("agent", &gw.token("agent"));
    config.options("-c statement_timeout=99999999999999999999999999");
    let err = sluice_integration_tests::connect_with(config)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
}

#[tokio::test]
async fn a_budget_lifted_where_the_parser_cannot_see_is_enforced_by_the_gateway() {
    let gw = gateway().await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    // A DO block is opaque to the parser.
    client
        .batch_execute(
            "DO $$ BEGIN PERFORM set_config('statement_' || 'timeout', '0', false); END $$",
        )
        .await
        .unwrap();
    assert_eq!(shown_timeout(&client).await, "0");
    // Postgres would let it run a minute; the gateway cancels it past budget and grace.
    stopped(&client, "SELECT pg_sleep(60)").await;
    client.simple_query("SELECT 1").await.unwrap();
}
