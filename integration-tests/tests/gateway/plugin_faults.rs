//! Plugins that misbehave refuse the statement they were asked about, and nothing else breaks:
//! the session, other sessions and the gateway carry on.

use std::time::{Duration, Instant};

use sluice_integration_tests::{GatewayOptions, PluginSpec, TestGateway, error_message, sqlstate};

fn fault(mode: &str) -> PluginSpec {
    PluginSpec::with(
        &format!("fault-{mode}"),
        "test-faults",
        &format!("[config]\nmode = \"{mode}\"\nmatch = \"misbehave\"\n"),
    )
}

async fn gateway(plugins: Vec<PluginSpec>) -> TestGateway {
    TestGateway::start_with(GatewayOptions {
        plugins,
        ..Default::default()
    })
    .await
}

async fn assert_refused_then_healthy(gw: &TestGateway, expect_in_message: &str) {
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let bystander = gw
        .connect("bystander", &gw.token("bystander"))
        .await
        .unwrap();
    let started = Instant::now();
    let err = client
        .simple_query("SELECT 'misbehave'")
        .await
        .expect_err("a failing plugin refuses the statement");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(sqlstate(&err), "42501");
    let message = error_message(&err);
    assert!(message.contains("fault-"), "names the plugin: {message}");
    assert!(message.contains(expect_in_message), "{message}");
    // The same session goes on (with a fresh instance), and so do the others.
    client.simple_query("SELECT 'fine'").await.unwrap();
    bystander.simple_query("SELECT 'fine'").await.unwrap();
    let again = client.simple_query("SELECT 'misbehave'").await;
    assert!(again.is_err(), "still refused the second time");
    client.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn plugin_that_loops_forever_is_stopped_at_its_deadline() {
    let gw = gateway(vec![fault("loop")]).await;
    assert_refused_then_healthy(&gw, "timed out").await;
}

#[tokio::test]
async fn plugin_blocked_in_a_host_call_is_stopped_at_its_deadline() {
    // A WASI sleep of 30 s: the epoch deadline never fires inside the host's clock, so the
    // call is dropped at its wall-time bound (20 ms timeout: within 2 s here, as above).
    let gw = gateway(vec![fault("sleep")]).await;
    assert_refused_then_healthy(&gw, "timed out").await;
}

#[tokio::test]
async fn a_long_plugin_call_does_not_stall_the_other_sessions_of_its_thread() {
    // One session thread: both sessions share it, as a worker's sessions do in production. An
    // operator may give a plugin seconds.
    let gw = TestGateway::start_with(GatewayOptions {
        plugins: vec![PluginSpec::with(
            "slow",
            "test-faults",
            "[config]\nmode = \"loop\"\nmatch = \"misbehave\"\n[limits]\ntimeout = \"3s\"\n",
        )],
        extra_server_toml: "workers = 1".into(),
        ..Default::default()
    })
    .await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let bystander = gw
        .connect("bystander", &gw.token("bystander"))
        .await
        .unwrap();
    bystander.simple_query("SELECT 1").await.unwrap();
    let slow = tokio::spawn(async move {
        let started = Instant::now();
        let refused = client.simple_query("SELECT 'misbehave'").await.is_err();
        (refused, started.elapsed())
    });
    // Wait until the slow call is running in the plugin.
    while !gw
        .metrics
        .encode()
        .contains("sluice_plugin_calls_running{plugin=\"slow\"} 1")
    {
        tokio::task::yield_now().await;
    }
    // While it runs, the bystander is served, many times over.
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        bystander.simple_query("SELECT 1").await.unwrap();
        latencies.push(started.elapsed());
    }
    latencies.sort();
    eprintln!(
        "bystander latency during a 3 s plugin call: median {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    assert!(
        !slow.is_finished(),
        "the bystander's 20 statements were answered while the slow call still ran"
    );
    let (refused, took) = slow.await.unwrap();
    assert!(refused, "stopped at its deadline (after {took:?})");
}

#[tokio::test]
async fn plugin_that_allocates_without_bound_is_stopped_at_its_memory_cap() {
    let gw = gateway(vec![fault("alloc")]).await;
    assert_refused_then_healthy(&gw, "trapped").await;
}

#[tokio::test]
async fn plugin_that_traps_refuses_and_is_recreated() {
    let gw = gateway(vec![fault("trap")]).await;
    assert_refused_then_healthy(&gw, "trapped").await;
}

#[tokio::test]
async fn plugin_reporting_an_error_refuses() {
    let gw = gateway(vec![fault("error")]).await;
    assert_refused_then_healthy(&gw, "reports an error").await;
}

#[tokio::test]
async fn file_that_is_not_a_component_is_reported_and_others_serve() {
    let gw = gateway(vec![PluginSpec::stock("no-ddl")]).await;
    std::fs::write(gw.plugin_dir().join("garbage.wasm"), b"\0asm not really").unwrap();
    gw.reload_plugins().await;
    let status = gw.plugins.as_ref().unwrap().status();
    let garbage = status
        .iter()
        .find(|s| s.name == "garbage")
        .expect("reported");
    assert!(
        garbage.error.is_some() && garbage.serving.is_none(),
        "{garbage:?}"
    );
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    assert!(
        client
            .simple_query("CREATE TABLE t1 (a int)")
            .await
            .is_err(),
        "no-ddl still serves"
    );
    client.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn truncated_file_keeps_the_previous_version_serving() {
    let gw = gateway(vec![PluginSpec::stock("no-ddl")]).await;
    let file = gw.plugin_dir().join("no-ddl.wasm");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    gw.reload_plugins().await;
    let status = gw.plugins.as_ref().unwrap().status();
    let entry = status.iter().find(|s| s.name == "no-ddl").unwrap();
    assert!(
        entry.error.is_some(),
        "the broken file is reported: {entry:?}"
    );
    assert!(
        entry.serving.is_some(),
        "the previous version keeps serving: {entry:?}"
    );
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    assert!(
        client
            .simple_query("CREATE TABLE t2 (a int)")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn plugin_removed_under_load_stops_deciding_without_failing_statements() {
    let gw = gateway(vec![
        PluginSpec::stock("no-ddl"),
        PluginSpec::stock("guard-roles"),
    ])
    .await;
    let token = gw.token("agent");
    let config = gw.client_config("agent", &token);
    let load = tokio::spawn(async move {
        let client = sluice_integration_tests::connect_with(config)
            .await
            .unwrap();
        let mut done = 0;
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            client
                .query_one("SELECT count(*) FROM items", &[])
                .await
                .unwrap();
            done += 1;
        }
        done
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::remove_file(gw.plugin_dir().join("no-ddl.wasm")).unwrap();
    gw.reload_plugins().await;
    assert!(load.await.unwrap() > 10, "statements kept flowing");
    let client = gw.connect("agent", &token).await.unwrap();
    client
        .batch_execute("CREATE TEMP TABLE allowed_now (a int)")
        .await
        .expect("no-ddl is gone");
    assert!(
        client.simple_query("SET ROLE postgres").await.is_err(),
        "guard-roles stays"
    );
}

#[tokio::test]
async fn plugin_failing_to_open_its_session_refuses_every_statement() {
    let gw = gateway(vec![PluginSpec::with(
        "fault-open",
        "test-faults",
        "[config]\nmode = \"refuse-open\"\n",
    )])
    .await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    for _ in 0..2 {
        let err = client.simple_query("SELECT 1").await.expect_err("refused");
        assert_eq!(sqlstate(&err), "42501");
        let message = error_message(&err);
        assert!(message.contains("fault-open"), "{message}");
        assert!(message.contains("refuses to open"), "{message}");
    }
}
