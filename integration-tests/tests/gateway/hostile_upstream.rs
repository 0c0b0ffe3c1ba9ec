//! An upstream that breaks the protocol (compromised, or not Postgres at all: malformed
//! messages, or answers to nothing the gateway asked) ends only the session that uses it, with
//! FATAL 08006; the gateway and sessions on other upstreams carry on.
//! The hostile upstream is a raw socket speaking just enough of the protocol to log in, then
//! answering each query text with the malformed bytes that text names.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use sluice_integration_tests::{
    GatewayOptions, TestGateway, connect_with, error_message, sqlstate,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HOSTILE_DB: &str = "hostile";

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn login_ok() -> Vec<u8> {
    let mut out = message(b'R', &0u32.to_be_bytes());
    out.extend(message(b'K', &[0, 0, 0, 42, 0, 0, 0, 7]));
    out.extend(message(b'Z', b"I"));
    out
}

/// What the upstream sends for `subject`'s login (the gateway names the subject in
/// application_name).
fn login_reply(application_name: &str) -> Option<Vec<u8>> {
    let subject = application_name.strip_prefix("sluice:").unwrap_or("");
    Some(match subject {
        "login-unknown-type" => message(b'!', b""),
        "login-huge-length" => vec![b'R', 0x7f, 0xff, 0xff, 0xff],
        "login-row-before-ready" => message(b'D', &[0, 0]),
        "login-no-key" => [message(b'R', &0u32.to_be_bytes()), message(b'Z', b"I")].concat(),
        "login-silent" => return None,
        _ => login_ok(),
    })
}

/// What the upstream answers to a query, by its text, and whether it then hangs up.
fn query_reply(sql: &str) -> (Vec<u8>, bool) {
    let ready = message(b'Z', b"I");
    match sql {
        "unknown type" => (message(b'!', b""), false),
        "authentication after login" => (message(b'R', &0u32.to_be_bytes()), false),
        "backend key after login" => (message(b'K', &[0; 8]), false),
        "negative length" => (vec![b'D', 0xff, 0xff, 0xff, 0xfe], false),
        "length shorter than its header" => (vec![b'C', 0, 0, 0, 2], false),
        "huge length" => (vec![b'D', 0x7f, 0xff, 0xff, 0xff], false),
        "length longer than the data" => (vec![b'C', 0, 0, 0, 100, b'S', b'E'], true),
        "silent hang-up" => (Vec::new(), true),
        // Well-formed messages that answer nothing the gateway asked: masking and audit cannot
        // tell which statement they belong to.
        "an answer to a request never sent" => ([message(b'1', b""), ready].concat(), false),
        "rows after the result completed" => (
            [
                message(b'C', b"SELECT 0\0"),
                message(b'D', &[0, 1, 0, 0, 0, 2, b'o', b'k']),
                ready,
            ]
            .concat(),
            false,
        ),
        _ => {
            let mut row = BytesMut::new();
            row.put_i16(1);
            row.put_i32(2);
            row.put_slice(b"ok");
            let mut columns = BytesMut::new();
            columns.put_i16(1);
            columns.put_slice(b"answer\0");
            columns.put_i32(0);
            columns.put_i16(0);
            columns.put_i32(25);
            columns.put_i16(-1);
            columns.put_i32(-1);
            columns.put_i16(0);
            let reply = [
                message(b'T', &columns),
                message(b'D', &row),
                message(b'C', b"SELECT 1\0"),
                ready,
            ]
            .concat();
            (reply, false)
        }
    }
}

/// Reads one length-prefixed packet (startup) or typed message; `None` at the end.
async fn read_packet(tcp: &mut TcpStream, typed: bool) -> Option<(u8, Vec<u8>)> {
    let tag = if typed { tcp.read_u8().await.ok()? } else { 0 };
    let len = tcp.read_u32().await.ok()? as usize;
    let mut body = vec![0; len.checked_sub(4)?];
    tcp.read_exact(&mut body).await.ok()?;
    Some((tag, body))
}

fn startup_param(body: &[u8], key: &str) -> String {
    let mut fields = body[4..].split(|&b| b == 0);
    while let Some(k) = fields.next() {
        let v = fields.next().unwrap_or_default();
        if k == key.as_bytes() {
            return String::from_utf8_lossy(v).into_owned();
        }
    }
    String::new()
}

async fn serve(mut tcp: TcpStream) {
    let Some((_, startup)) = read_packet(&mut tcp, false).await else {
        return;
    };
    let Some(reply) = login_reply(&startup_param(&startup, "application_name")) else {
        // Never answers: the gateway's connect_timeout must give up.
        tokio::time::sleep(Duration::from_secs(60)).await;
        return;
    };
    if tcp.write_all(&reply).await.is_err() {
        return;
    }
    while let Some((tag, body)) = read_packet(&mut tcp, true).await {
        if tag != b'Q' {
            return;
        }
        let sql = String::from_utf8_lossy(body.strip_suffix(b"\0").unwrap_or(&body)).into_owned();
        let (reply, hang_up) = query_reply(&sql);
        if tcp.write_all(&reply).await.is_err() || hang_up {
            return;
        }
    }
}

async fn hostile_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(serve(tcp));
        }
    });
    port
}

async fn gateway() -> TestGateway {
    let port = hostile_upstream().await;
    TestGateway::start_with(GatewayOptions {
        extra_toml: format!(
            r#"[[upstream]]
database = "{HOSTILE_DB}"
url = "postgres://sluice@127.0.0.1:{port}/{HOSTILE_DB}"
tls = "disable"
connect_timeout = "1s"
"#
        ),
        ..GatewayOptions::default()
    })
    .await
}

async fn connect_hostile(
    gw: &TestGateway,
    subject: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut claims = gw.claims(subject, Duration::from_secs(300));
    claims.db = HOSTILE_DB.into();
    let mut config = gw.client_config(subject, &gw.sign(&claims));
    config.dbname(HOSTILE_DB);
    connect_with(config).await
}

async fn rows(client: &tokio_postgres::Client, sql: &str) -> usize {
    let messages = client.simple_query(sql).await.unwrap();
    messages
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count()
}

/// A session on the real upstream, opened before the hostile one misbehaves, still works, and
/// so does a new one.
async fn others_unaffected(gw: &TestGateway, bystander: &tokio_postgres::Client) {
    let row = bystander.query_one("SELECT 1 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    let fresh = gw.connect("fresh", &gw.token("fresh")).await.unwrap();
    fresh.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn malformed_upstream_messages_after_login_end_that_session_with_08006() {
    let gw = gateway().await;
    let bystander = gw
        .connect("bystander", &gw.token("bystander"))
        .await
        .unwrap();
    for case in [
        "unknown type",
        "authentication after login",
        "backend key after login",
        "negative length",
        "length shorter than its header",
        "length longer than the data",
        "silent hang-up",
        "an answer to a request never sent",
        "rows after the result completed",
    ] {
        let client = connect_hostile(&gw, "agent").await.unwrap();
        // The hostile upstream behaves until asked to misbehave.
        assert_eq!(rows(&client, "fine").await, 1, "{case}");
        let err = client.simple_query(case).await.unwrap_err();
        assert_eq!(sqlstate(&err), "08006", "{case}: {}", error_message(&err));
        assert!(
            error_message(&err).contains("upstream connection failed"),
            "{case}: {}",
            error_message(&err)
        );
        assert!(client.is_closed() || client.simple_query("fine").await.is_err());
        others_unaffected(&gw, &bystander).await;
    }
}

/// A length Postgres could send but the gateway will not buffer is no broken upstream: the
/// client is told which limit it hit.
#[tokio::test]
async fn an_upstream_message_past_the_limit_ends_the_session_naming_the_limit() {
    let gw = gateway().await;
    let client = connect_hostile(&gw, "agent").await.unwrap();
    assert_eq!(rows(&client, "fine").await, 1);
    let err = client.simple_query("huge length").await.unwrap_err();
    assert_eq!(sqlstate(&err), "54000", "{}", error_message(&err));
    assert!(
        error_message(&err).contains("max_upstream_message_size"),
        "{}",
        error_message(&err)
    );
}

#[tokio::test]
async fn malformed_or_silent_upstream_logins_are_refused_with_08006() {
    let gw = gateway().await;
    let bystander = gw
        .connect("bystander", &gw.token("bystander"))
        .await
        .unwrap();
    for subject in [
        "login-unknown-type",
        "login-huge-length",
        "login-row-before-ready",
        "login-no-key",
        "login-silent",
    ] {
        let started = std::time::Instant::now();
        let err = connect_hostile(&gw, subject).await.unwrap_err();
        assert_eq!(
            sqlstate(&err),
            "08006",
            "{subject}: {}",
            error_message(&err)
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{subject}: the upstream's connect_timeout bounds the wait"
        );
        others_unaffected(&gw, &bystander).await;
    }
    // The same upstream, behaving, still gets sessions.
    let client = connect_hostile(&gw, "agent").await.unwrap();
    assert_eq!(rows(&client, "fine").await, 1);
}
