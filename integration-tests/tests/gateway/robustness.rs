//! Misbehaving peers end their own session with a clear error; the gateway and the other
//! sessions carry on. Startup negotiation corners and graceful shutdown.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;
use sluice_integration_tests::{GatewayOptions, PluginSpec, RawClient, TestGateway, tags};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn still_serves(gw: &TestGateway) {
    let client = gw.connect("other", &gw.token("other")).await.unwrap();
    let row = client.query_one("SELECT 7", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
}

/// Sends `bytes` on a logged-in session and expects FATAL 08P01 and the close, with another
/// session and the gateway unaffected.
async fn closes_with_protocol_violation(gw: &TestGateway, bytes: &[u8]) {
    let bystander = gw
        .connect("bystander", &gw.token("bystander"))
        .await
        .unwrap();
    let mut raw = RawClient::connect(gw, "agent", &gw.token("agent")).await;
    raw.send(bytes).await;
    let reply = raw.recv().await.expect("an error before the close");
    assert_eq!(reply.tag, b'E', "{bytes:?}");
    assert_eq!(reply.sqlstate(), "08P01", "{bytes:?}");
    assert!(raw.recv().await.is_none(), "the connection must close");
    bystander.simple_query("SELECT 1").await.unwrap();
    still_serves(gw).await;
}

#[tokio::test]
async fn unknown_message_type_gets_a_protocol_violation_and_only_that_session_closes() {
    let gw = TestGateway::start().await;
    closes_with_protocol_violation(&gw, &[b'!', 0, 0, 0, 4]).await;
}

#[tokio::test]
async fn absurd_message_length_is_refused_without_allocating_it() {
    let gw = TestGateway::start().await;
    closes_with_protocol_violation(&gw, &[b'Q', 0x7f, 0xff, 0xff, 0xf0]).await;
}

#[tokio::test]
async fn garbage_instead_of_a_startup_packet_closes_only_that_connection() {
    let gw = TestGateway::start().await;
    for garbage in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0, 0, 0, 2][..],
        &[0xff; 64][..],
    ] {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port()))
            .await
            .unwrap();
        tcp.write_all(garbage).await.unwrap();
        let mut sink = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut sink)).await;
        assert!(read.is_ok(), "the gateway must close a garbage connection");
    }
    still_serves(&gw).await;
}

#[tokio::test]
async fn garbage_where_the_tls_handshake_belongs_closes_only_that_connection() {
    let gw = TestGateway::start().await;
    let ssl_request = [0, 0, 0, 8, 4, 210, 22, 47];
    // After SSLRequest and its 'S'; and as a direct-TLS connection (first byte 0x16, the TLS
    // handshake record type) whose record is nonsense.
    for (request, garbage) in [
        (&ssl_request[..], &b"GET / HTTP/1.1\r\n\r\n"[..]),
        (&ssl_request[..], &[0x16, 3, 1, 0xff, 0xff, 0, 0, 0][..]),
        (&[][..], &[0x16, 3, 3, 0, 5, 1, 2, 3, 4, 5][..]),
        (&[][..], &[0x16; 64][..]),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port()))
            .await
            .unwrap();
        if !request.is_empty() {
            tcp.write_all(request).await.unwrap();
            assert_eq!(tcp.read_u8().await.unwrap(), b'S');
        }
        tcp.write_all(garbage).await.unwrap();
        let mut sink = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut sink)).await;
        assert!(
            read.is_ok(),
            "{garbage:?}: the gateway must close the connection"
        );
        still_serves(&gw).await;
    }
}

#[tokio::test]
async fn gssenc_request_is_declined_and_tls_follows() {
    let gw = TestGateway::start().await;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port()))
        .await
        .unwrap();
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30])
        .await
        .unwrap();
    assert_eq!(tcp.read_u8().await.unwrap(), b'N');
    let mut ssl = BytesMut::new();
    frontend::ssl_request(&mut ssl);
    tcp.write_all(&ssl).await.unwrap();
    assert_eq!(tcp.read_u8().await.unwrap(), b'S');
}

#[tokio::test]
async fn direct_tls_without_ssl_request_is_accepted() {
    let gw = TestGateway::start().await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port()))
        .await
        .unwrap();
    let mut config =
        (*sluice::tls::upstream_config(sluice::config::UpstreamTlsMode::Require, None)
            .unwrap()
            .unwrap())
        .clone();
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("direct TLS handshake");
    let mut out = BytesMut::new();
    frontend::startup_message([("user", "agent"), ("database", "app")], &mut out).unwrap();
    tls.write_all(&out).await.unwrap();
    assert_eq!(tls.read_u8().await.unwrap(), b'R', "asked for the token");
}

#[tokio::test]
async fn newer_protocol_minor_version_is_negotiated_down_to_3_0() {
    let gw = TestGateway::start_with(GatewayOptions {
        client_tls: "prefer",
        ..Default::default()
    })
    .await;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port()))
        .await
        .unwrap();
    let mut body = BytesMut::new();
    body.put_u32(0x0003_0002);
    for s in [
        "user",
        "agent",
        "database",
        "app",
        "_pq_.future_option",
        "on",
        "",
    ] {
        body.put_slice(s.as_bytes());
        body.put_u8(0);
    }
    let mut packet = BytesMut::new();
    packet.put_u32(body.len() as u32 + 4);
    packet.put_slice(&body);
    tcp.write_all(&packet).await.unwrap();
    assert_eq!(tcp.read_u8().await.unwrap(), b'v');
    let len = tcp.read_u32().await.unwrap() as usize;
    let mut rest = vec![0; len - 4];
    tcp.read_exact(&mut rest).await.unwrap();
    assert_eq!(
        &rest[..8],
        &[0, 0, 0, 0, 0, 0, 0, 1],
        "minor 0, one unsupported option"
    );
    assert_eq!(&rest[8..], b"_pq_.future_option\0");
    assert_eq!(tcp.read_u8().await.unwrap(), b'R');
}

#[tokio::test]
async fn shutdown_stops_accepting_and_ends_sessions_after_the_grace_period() {
    let gw = TestGateway::start_with(GatewayOptions {
        shutdown_grace: Duration::from_millis(500),
        ..Default::default()
    })
    .await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let shutdown = gw.gateway.shutdown(Duration::from_millis(500));
    let check = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!gw.gateway.is_accepting());
        let refused = gw.connect("late", &gw.token("late")).await;
        assert!(refused.is_err(), "no new sessions while draining");
        // The open session still works during the grace period.
        let mut out = BytesMut::new();
        frontend::query("SELECT 1", &mut out).unwrap();
        raw.send(&out).await;
        assert_eq!(tags(&raw.until_ready().await), "TDCZ");
        let fatal = raw
            .recv()
            .await
            .expect("FATAL at the end of the grace period");
        assert_eq!(fatal.tag, b'E');
        assert_eq!(fatal.sqlstate(), "57P01");
        assert!(raw.recv().await.is_none());
    };
    tokio::join!(shutdown, check);
    assert_eq!(gw.gateway.open_sessions(), 0);
}

#[tokio::test]
async fn shutdown_waits_for_sessions_that_finish_within_the_grace_period() {
    let gw = TestGateway::start().await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let work = async move {
        let row = client
            .query_one("SELECT pg_sleep(0.3)::text || 'done'", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "done");
        drop(client);
    };
    let started = std::time::Instant::now();
    tokio::join!(gw.gateway.shutdown(Duration::from_secs(10)), work);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn lengths_that_lie_close_only_that_session() {
    let gw = TestGateway::start().await;
    // Shorter than the length field itself, zero, and negative.
    for bytes in [
        &[b'Q', 0, 0, 0, 3][..],
        &[b'Q', 0, 0, 0, 0][..],
        &[b'Q', 0xff, 0xff, 0xff, 0xff][..],
        &[b'P', 0x80, 0, 0, 0][..],
    ] {
        closes_with_protocol_violation(&gw, bytes).await;
    }
}

#[tokio::test]
async fn startup_or_ssl_request_after_login_is_a_protocol_violation() {
    let gw = TestGateway::start().await;
    let mut startup = BytesMut::new();
    frontend::startup_message([("user", "agent"), ("database", "app")], &mut startup).unwrap();
    closes_with_protocol_violation(&gw, &startup).await;
    let mut ssl = BytesMut::new();
    frontend::ssl_request(&mut ssl);
    closes_with_protocol_violation(&gw, &ssl).await;
}

#[tokio::test]
async fn message_truncated_by_a_disconnect_loses_nothing_else() {
    let gw = TestGateway::start().await;
    let bystander = gw
        .connect("bystander", &gw.token("bystander"))
        .await
        .unwrap();
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    // Announces 100 bytes, sends 9, then leaves.
    raw.send(&[b'Q', 0, 0, 0, 100, b'S', b'E', b'L', b'E'])
        .await;
    drop(raw);
    bystander.simple_query("SELECT 1").await.unwrap();
    still_serves(&gw).await;
}

#[tokio::test]
async fn bind_or_execute_without_a_parse_gets_postgres_error_and_the_session_goes_on() {
    let gw = TestGateway::start().await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let mut out = BytesMut::new();
    sluice_integration_tests::bind_statement_and_execute(&mut out, "never_parsed", &[]);
    frontend::sync(&mut out);
    let reply = raw.exchange(&out).await;
    assert_eq!(tags(&reply), "EZ");
    assert_eq!(reply[0].sqlstate(), "26000");

    out.clear();
    frontend::execute("no_such_portal", 0, &mut out).unwrap();
    frontend::sync(&mut out);
    let reply = raw.exchange(&out).await;
    assert_eq!(tags(&reply), "EZ");
    assert_eq!(reply[0].sqlstate(), "34000");

    out.clear();
    frontend::query("SELECT 1", &mut out).unwrap();
    assert_eq!(tags(&raw.exchange(&out).await), "TDCZ");
}

/// Found by the client_messages fuzz target: with a policy loaded, the gateway reads the Bind
/// that follows an unnamed Parse, and a negative parameter count panicked the session. Since
/// messages are held to their structure, it is a protocol violation before anything reads it.
#[tokio::test]
async fn bind_with_a_negative_parameter_count_is_a_protocol_violation() {
    let gw = TestGateway::start_with(GatewayOptions {
        plugins: vec![PluginSpec::stock("no-ddl")],
        ..GatewayOptions::default()
    })
    .await;
    let mut out = BytesMut::new();
    frontend::parse("", "SELECT $1::int", [], &mut out).unwrap();
    let mut bind = BytesMut::new();
    bind.put_slice(b"\0\0");
    bind.put_i16(0);
    bind.put_i16(-1);
    out.put_u8(b'B');
    out.put_i32(bind.len() as i32 + 4);
    out.put_slice(&bind);
    frontend::execute("", 0, &mut out).unwrap();
    frontend::sync(&mut out);
    closes_with_protocol_violation(&gw, &out).await;
}

/// A Query whose string ends before the message does: Postgres and a reader of the first string
/// could disagree on what was sent, so nothing of it is judged or forwarded.
#[tokio::test]
async fn a_query_with_bytes_after_its_string_is_a_protocol_violation() {
    let gw = TestGateway::start_with(GatewayOptions {
        plugins: vec![PluginSpec::stock("no-ddl")],
        ..GatewayOptions::default()
    })
    .await;
    let body = b"SELECT 1\0DROP TABLE items\0";
    let mut out = BytesMut::new();
    out.put_u8(b'Q');
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
    closes_with_protocol_violation(&gw, &out).await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    client
        .query_one("SELECT count(*) FROM items WHERE id <= 100", &[])
        .await
        .unwrap();
}

#[tokio::test]
async fn copy_messages_outside_copy_from_stdin_are_a_protocol_violation() {
    let gw = TestGateway::start().await;
    for message in [
        [b'd'.to_be_bytes().as_slice(), &7i32.to_be_bytes(), b"abc"].concat(),
        [b'c', 0, 0, 0, 4].to_vec(),
        [b'f'.to_be_bytes().as_slice(), &7i32.to_be_bytes(), b"no\0"].concat(),
    ] {
        closes_with_protocol_violation(&gw, &message).await;
    }
    // Inside COPY FROM STDIN they are the data.
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let reply = raw
        .exchange(&sluice_integration_tests::query_message(
            "CREATE TEMP TABLE copied (v text)",
        ))
        .await;
    assert_eq!(tags(&reply), "CZ");
    raw.send(&sluice_integration_tests::query_message(
        "COPY copied FROM STDIN",
    ))
    .await;
    assert_eq!(raw.recv().await.unwrap().tag, b'G');
    let mut out = BytesMut::new();
    frontend::CopyData::new(&b"one\n"[..])
        .unwrap()
        .write(&mut out);
    frontend::copy_done(&mut out);
    raw.send(&out).await;
    assert_eq!(tags(&raw.until_ready().await), "CZ");
    let reply = raw
        .exchange(&sluice_integration_tests::query_message(
            "SELECT count(*) FROM copied",
        ))
        .await;
    assert_eq!(tags(&reply), "TDCZ");
    // And after it, stray data is refused again.
    closes_with_protocol_violation(&gw, &[b'c', 0, 0, 0, 4]).await;
}

#[tokio::test]
async fn a_row_larger_than_the_upstream_limit_ends_the_session_naming_the_limit() {
    let gw = TestGateway::start_with(GatewayOptions {
        extra_server_toml: "max_upstream_message_size = 1048576\n".into(),
        ..GatewayOptions::default()
    })
    .await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let row = client
        .query_one("SELECT length(repeat('x', 900000))", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 900_000);
    let err = client
        .query_one("SELECT repeat('x', 2000000)", &[])
        .await
        .unwrap_err();
    assert_eq!(sluice_integration_tests::sqlstate(&err), "54000", "{err}");
    assert!(
        sluice_integration_tests::error_message(&err).contains("max_upstream_message_size"),
        "{err}"
    );
    still_serves(&gw).await;
}
