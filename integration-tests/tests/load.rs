//! Load at the door, against a gateway running as its own process: a thousand idle sessions
//! held at once (the gateway's resident memory is printed), and two hundred clients that never
//! finish their startup, all dropped by `login_timeout` while the service carries on.

use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use sluice_integration_tests::{GatewayOptions, GatewayProcess, client_config, connect_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IDLE_SESSIONS: usize = 1000;
const SLOW_CLIENTS: usize = 200;

/// Raises this process's open-file limit to cover `needed` descriptors, or says how.
fn ensure_open_files(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    assert!(
        limit.rlim_max >= needed,
        "this test needs {needed} open files but the hard limit is {}: raise it (ulimit -Hn, or LimitNOFILE= for the CI service)",
        limit.rlim_max
    );
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_sessions_are_held_at_once_and_each_still_answers() {
    ensure_open_files(IDLE_SESSIONS as u64 + 256);
    let gw = GatewayProcess::start(GatewayOptions {
        extra_server_toml: "max_connections = 1050\n".into(),
        ..GatewayOptions::default()
    })
    .await;
    let port = gw.port();
    let started = Instant::now();
    let baseline = gw.resident_bytes();
    let tokens: Vec<String> = (0..IDLE_SESSIONS)
        .map(|i| gw.token(&format!("agent-{i}")))
        .collect();
    let clients: Vec<tokio_postgres::Client> = stream::iter(tokens.iter().enumerate())
        .map(|(i, token)| async move {
            let client = connect_with(client_config(port, &format!("agent-{i}"), token))
                .await
                .unwrap_or_else(|e| panic!("session {i}: {e}"));
            // A statement each, so every session has been through the whole relay once.
            client.simple_query("SELECT 1").await.expect("first query");
            client
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let connected_in = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = gw.resident_bytes();
    let per_session = held.saturating_sub(baseline) / IDLE_SESSIONS as u64;
    eprintln!(
        "{IDLE_SESSIONS} idle sessions opened in {connected_in:.1?}; gateway RSS {:.1} MiB at start, {:.1} MiB holding them ({} KiB per session)",
        mib(baseline),
        mib(held),
        per_session / 1024
    );
    assert_eq!(clients.len(), IDLE_SESSIONS);

    // All of them still answer, all at once.
    let answered = stream::iter(clients.iter())
        .map(|client| async move { client.query_one("SELECT 41 + 1", &[]).await })
        .buffer_unordered(IDLE_SESSIONS)
        .filter(|row| {
            let ok = matches!(row, Ok(row) if row.get::<_, i32>(0) == 42);
            async move { ok }
        })
        .count()
        .await;
    assert_eq!(answered, IDLE_SESSIONS, "every held session answers");
    // Idle sessions cost buffers, not copies of results: a generous bound that a leak or a
    // per-session preallocation of a large buffer would break.
    assert!(
        per_session < 512 * 1024,
        "{} KiB per idle session",
        per_session / 1024
    );
}

/// How a slow client stalls its startup.
#[derive(Clone, Copy, Debug)]
enum Stall {
    /// Connects and sends nothing.
    Silent,
    /// Sends two bytes of the length word.
    HalfLength,
    /// Announces a 100-byte startup packet and sends ten.
    ShortPacket,
    /// Sends SSLRequest, gets 'S' and never starts the TLS handshake.
    NoHandshake,
}

async fn stall(port: u16, how: Stall) -> tokio::net::TcpStream {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("slow client connects");
    let bytes: &[u8] = match how {
        Stall::Silent => &[],
        Stall::HalfLength => &[0, 0],
        Stall::ShortPacket => &[0, 0, 0, 100, 0, 3, 0, 0, b'u', b's'],
        Stall::NoHandshake => &[0, 0, 0, 8, 4, 210, 22, 47],
    };
    tcp.write_all(bytes).await.expect("slow client writes");
    tcp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_that_never_finish_startup_are_dropped_by_the_login_timeout() {
    ensure_open_files(SLOW_CLIENTS as u64 + 256);
    let login_timeout = Duration::from_secs(2);
    let gw = GatewayProcess::start(GatewayOptions {
        extra_server_toml: "login_timeout = \"2s\"\n".into(),
        ..GatewayOptions::default()
    })
    .await;
    let port = gw.port();
    let kinds = [
        Stall::Silent,
        Stall::HalfLength,
        Stall::ShortPacket,
        Stall::NoHandshake,
    ];
    let started = Instant::now();
    let mut slow = Vec::new();
    for i in 0..SLOW_CLIENTS {
        let how = kinds[i % kinds.len()];
        slow.push((how, stall(port, how).await));
    }

    // While all of them hang in startup, a real client logs in and works.
    let client = connect_with(client_config(port, "agent", &gw.token("agent")))
        .await
        .expect("a real client gets in while 200 hang");
    let row = client.query_one("SELECT 1 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    assert!(
        started.elapsed() < login_timeout,
        "the real client was served before the slow ones timed out"
    );

    // Every slow client is dropped: after the timeout, not before it.
    let closed_after = stream::iter(slow)
        .map(|(how, mut tcp)| async move {
            let mut sink = Vec::new();
            let read = tokio::time::timeout(
                login_timeout + Duration::from_secs(5),
                tcp.read_to_end(&mut sink),
            )
            .await;
            assert!(read.is_ok(), "{how:?}: still open long after login_timeout");
            started.elapsed()
        })
        .buffer_unordered(SLOW_CLIENTS)
        .collect::<Vec<_>>()
        .await;
    let first = closed_after.iter().min().unwrap();
    let last = closed_after.iter().max().unwrap();
    eprintln!(
        "{SLOW_CLIENTS} slow clients dropped between {first:.2?} and {last:.2?} (login_timeout {login_timeout:?})"
    );
    assert!(
        *first >= login_timeout - Duration::from_millis(100),
        "a slow client was dropped before its login_timeout: {first:?}"
    );

    // And the service is as it was.
    assert_eq!(
        client
            .query_one("SELECT 2 + 2", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        4
    );
    let fresh = connect_with(client_config(port, "later", &gw.token("later")))
        .await
        .expect("new clients still get in");
    fresh.simple_query("SELECT 1").await.unwrap();
}
