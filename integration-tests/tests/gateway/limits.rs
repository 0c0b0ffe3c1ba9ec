//! Connection and idle limits: each refusal is a clear FATAL with Postgres' SQLSTATE, and the
//! gateway serves everyone else.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use sluice_integration_tests::{GatewayOptions, RawClient, TestGateway, error_message, sqlstate};

async fn gateway(server_toml: &str) -> TestGateway {
    TestGateway::start_with(GatewayOptions {
        extra_server_toml: server_toml.to_owned(),
        ..Default::default()
    })
    .await
}

/// Connects and expects the login to be refused; returns SQLSTATE and message.
async fn refused_login(gw: &TestGateway, subject: &str) -> (String, String) {
    let Err(err) = gw.connect(subject, &gw.token(subject)).await else {
        panic!("the login of {subject} must be refused");
    };
    (sqlstate(&err), error_message(&err))
}

/// Connects as `subject`, retrying for a few seconds while a just-closed session gives its
/// place back (the gateway notices the close asynchronously).
async fn connect_once_freed(gw: &TestGateway, subject: &str) -> tokio_postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match gw.connect(subject, &gw.token(subject)).await {
            Ok(client) => return client,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("the freed place was not given back to {subject}: {e}"),
        }
    }
}

#[tokio::test]
async fn connections_beyond_max_connections_get_too_many_clients() {
    let gw = gateway("max_connections = 2\n").await;
    let first = gw.connect("a", &gw.token("a")).await.unwrap();
    let second = gw.connect("b", &gw.token("b")).await.unwrap();
    let (code, message) = refused_login(&gw, "c").await;
    assert_eq!(code, "53300");
    assert_eq!(message, "sorry, too many clients already");
    // The sessions inside the limit are untouched, and a closed one frees its place.
    first.simple_query("SELECT 1").await.unwrap();
    drop(first);
    let third = connect_once_freed(&gw, "c").await;
    third.simple_query("SELECT 1").await.unwrap();
    second.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn one_subject_cannot_hold_more_sessions_than_its_limit() {
    let gw = gateway("max_connections_per_subject = 2\n").await;
    let one = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let _two = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let (code, message) = refused_login(&gw, "agent").await;
    assert_eq!(code, "53300");
    assert_eq!(message, "too many connections for subject \"agent\"");
    // Other subjects are not affected.
    let other = gw.connect("other", &gw.token("other")).await.unwrap();
    other.simple_query("SELECT 1").await.unwrap();
    drop(one);
    let again = connect_once_freed(&gw, "agent").await;
    again.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn idle_session_is_closed_but_a_long_statement_is_not() {
    let gw = gateway("idle_timeout = \"1s\"\n").await;
    let mut idle = RawClient::connect(&gw, "idle", &gw.token("idle")).await;
    let mut busy = RawClient::connect(&gw, "busy", &gw.token("busy")).await;
    let mut out = BytesMut::new();
    frontend::query("SELECT pg_sleep(2.5)", &mut out).unwrap();
    busy.send(&out).await;

    let started = Instant::now();
    let fatal = idle.recv().await.expect("a FATAL before the close");
    assert_eq!(fatal.tag, b'E');
    assert_eq!(fatal.sqlstate(), "57P05");
    assert!(idle.recv().await.is_none(), "closed after the FATAL");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        started.elapsed()
    );

    // The statement that ran longer than the idle timeout completes normally.
    let reply = busy.until_ready().await;
    assert_eq!(sluice_integration_tests::tags(&reply), "TDCZ");
}

#[tokio::test]
async fn a_session_that_keeps_sending_outlives_its_idle_timeout() {
    let gw = gateway("idle_timeout = \"1s\"\n").await;
    let client = gw.connect("steady", &gw.token("steady")).await.unwrap();
    // A statement every 300 ms for three idle timeouts: never a whole second without one.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        client.simple_query("SELECT 1").await.expect("still open");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    client.simple_query("SELECT 1").await.expect("still open");
}

#[tokio::test]
async fn a_client_that_stalls_before_sending_its_token_is_told_why_it_is_dropped() {
    let gw = TestGateway::start_with(GatewayOptions {
        extra_server_toml: "login_timeout = \"1s\"\n".into(),
        ..GatewayOptions::default()
    })
    .await;
    let started = Instant::now();
    let mut raw = RawClient::start_login(&gw, "agent").await;
    let reply = tokio::time::timeout(Duration::from_secs(5), raw.recv())
        .await
        .expect("answered within the timeout")
        .expect("an error before the close");
    assert_eq!(reply.tag, b'E');
    assert_eq!(reply.sqlstate(), "57014");
    let fields = sluice::wire::backend::error_fields(&reply.body);
    assert!(fields.contains(&(b'S', "FATAL".into())), "{fields:?}");
    assert!(fields.contains(&(b'M', "canceling authentication due to timeout".into())));
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(raw.recv().await.is_none(), "the connection closes");
}
