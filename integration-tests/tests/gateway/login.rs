//! Logging in with tokens: what is accepted, what is refused and how.

use std::time::Duration;

use sluice_integration_tests::{GatewayOptions, TestGateway, sqlstate};

async fn refused_with(gw: &TestGateway, user: &str, token: &str) -> (String, String) {
    let err = gw
        .connect(user, token)
        .await
        .expect_err("login must be refused");
    let db = err
        .as_db_error()
        .expect("a server error, not a dropped connection");
    assert_eq!(db.severity(), "FATAL");
    (sqlstate(&err), db.message().to_owned())
}

#[tokio::test]
async fn valid_token_logs_in_and_upstream_sees_gateway_role_and_subject() {
    let gw = TestGateway::start().await;
    let mut config = gw.client_config("agent-1", &gw.token("agent-1"));
    config.application_name("report-job");
    let client = sluice_integration_tests::connect_with(config)
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT current_user::text, application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "sluice_gw");
    assert_eq!(row.get::<_, String>(1), "sluice:agent-1:report-job");
}

#[tokio::test]
async fn expired_token_is_refused() {
    let gw = TestGateway::start().await;
    let mut claims = gw.claims("agent", Duration::from_secs(60));
    claims.exp = claims.iat - 1;
    let (code, message) = refused_with(&gw, "agent", &gw.sign(&claims)).await;
    assert_eq!(code, "28P01");
    assert_eq!(message, "password authentication failed for user \"agent\"");
}

#[tokio::test]
async fn not_yet_valid_token_is_refused() {
    let gw = TestGateway::start().await;
    let mut claims = gw.claims("agent", Duration::from_secs(600));
    claims.nbf += 300;
    let (code, _) = refused_with(&gw, "agent", &gw.sign(&claims)).await;
    assert_eq!(code, "28P01");
}

#[tokio::test]
async fn token_from_another_gateway_key_is_refused() {
    let gw = TestGateway::start().await;
    let other = TestGateway::start().await;
    let (code, message) = refused_with(&gw, "agent", &other.token("agent")).await;
    assert_eq!(code, "28P01");
    assert!(
        !message.contains("signature"),
        "refusals must not say why: {message}"
    );
}

#[tokio::test]
async fn alg_none_token_is_refused() {
    let gw = TestGateway::start().await;
    let valid = gw.token("agent");
    let payload = valid.split('.').nth(1).unwrap();
    // {"alg":"none","typ":"JWT"} with the genuine claims and no signature.
    let forged = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    let (code, _) = refused_with(&gw, "agent", &forged).await;
    assert_eq!(code, "28P01");
}

#[tokio::test]
async fn wrong_audience_token_is_refused() {
    let gw = TestGateway::start().await;
    let mut claims = gw.claims("agent", Duration::from_secs(60));
    claims.aud = "another-service".into();
    let (code, _) = refused_with(&gw, "agent", &gw.sign(&claims)).await;
    assert_eq!(code, "28P01");
}

#[tokio::test]
async fn token_for_another_database_is_refused() {
    let gw = TestGateway::start().await;
    let mut claims = gw.claims("agent", Duration::from_secs(60));
    claims.db = "billing".into();
    let (code, _) = refused_with(&gw, "agent", &gw.sign(&claims)).await;
    assert_eq!(code, "28P01");
}

#[tokio::test]
async fn a_database_the_gateway_does_not_serve_is_refused_with_3d000() {
    let gw = TestGateway::start().await;
    let token = gw
        .tokens
        .mint("agent", "ghost", &[], Duration::from_secs(60))
        .unwrap();
    let mut config = gw.client_config("agent", &token);
    config.dbname("ghost");
    let err = sluice_integration_tests::connect_with(config)
        .await
        .expect_err("no upstream serves ghost");
    assert_eq!(sqlstate(&err), "3D000");
    assert!(
        sluice_integration_tests::error_message(&err).contains("\"ghost\" is not served"),
        "{err}"
    );
}

#[tokio::test]
async fn token_of_another_subject_is_refused() {
    let gw = TestGateway::start().await;
    let (code, message) = refused_with(&gw, "mallory", &gw.token("agent")).await;
    assert_eq!(code, "28P01");
    assert!(message.contains("mallory"));
}

#[tokio::test]
async fn garbage_password_is_refused_without_echoing_it() {
    let gw = TestGateway::start().await;
    let (code, message) = refused_with(&gw, "agent", "hunter2-not-a-token").await;
    assert_eq!(code, "28P01");
    assert!(!message.contains("hunter2"));
}

#[tokio::test]
async fn cleartext_client_is_refused_when_tls_is_required() {
    let gw = TestGateway::start().await;
    let out = gw
        .psql("agent", &gw.token("agent"), "disable", &["-c", "SELECT 1"])
        .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sluice requires TLS"), "{stderr}");
}

#[tokio::test]
async fn cleartext_client_is_accepted_when_tls_is_preferred() {
    let gw = TestGateway::start_with(GatewayOptions {
        client_tls: "prefer",
        ..Default::default()
    })
    .await;
    let out = gw
        .psql(
            "agent",
            &gw.token("agent"),
            "disable",
            &["-tAc", "SELECT 40 + 2"],
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
}

#[tokio::test]
async fn psql_logs_in_over_tls_with_a_token() {
    let gw = TestGateway::start().await;
    let out = gw
        .psql(
            "agent",
            &gw.token("agent"),
            "require",
            &[
                "-tAc",
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            ],
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The gateway's upstream leg is TLS too (tls = "prefer" against a TLS-enabled server).
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t");
}

#[tokio::test]
async fn harmless_startup_options_pass_through() {
    let gw = TestGateway::start().await;
    let mut config = gw.client_config("agent", &gw.token("agent"));
    config.options("-c statement_timeout=1234 -c TimeZone=Asia/Tokyo");
    let client = sluice_integration_tests::connect_with(config)
        .await
        .unwrap();
    let timeout: String = client
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(timeout, "1234ms");
    let tz: String = client.query_one("SHOW TimeZone", &[]).await.unwrap().get(0);
    assert_eq!(tz, "Asia/Tokyo");
}

#[tokio::test]
async fn role_in_startup_options_is_refused_naming_the_setting() {
    let gw = TestGateway::start().await;
    for (options, setting) in [
        ("-c role=postgres", "role"),
        ("-c search_path=evil,public", "search_path"),
        ("-c session_authorization=postgres", "session_authorization"),
    ] {
        let mut config = gw.client_config("agent", &gw.token("agent"));
        config.options(options);
        let err = sluice_integration_tests::connect_with(config)
            .await
            .expect_err("must be refused");
        let db = err.as_db_error().expect("server error");
        assert_eq!(db.severity(), "FATAL");
        assert_eq!(db.code().code(), "42501");
        assert!(db.message().contains(setting), "{}", db.message());
    }
}

#[tokio::test]
async fn replication_connection_is_refused() {
    let gw = TestGateway::start().await;
    let out = tokio::process::Command::new(sluice_integration_tests::client_binary("psql"))
        .arg(format!(
            "host=127.0.0.1 port={} user=agent dbname=app sslmode=require replication=database",
            gw.port()
        ))
        .args(["-c", "IDENTIFY_SYSTEM"])
        .env("PGPASSWORD", gw.token("agent"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("replication connections are not allowed"),
        "{stderr}"
    );
}

#[tokio::test]
async fn session_is_terminated_when_its_token_expires() {
    let gw = TestGateway::start().await;
    let claims = gw.claims("agent", Duration::from_secs(2));
    let client = gw.connect("agent", &gw.sign(&claims)).await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    let expires = std::time::UNIX_EPOCH + Duration::from_secs(claims.exp);
    // A query still running at expiry is cut off too.
    let err = client
        .simple_query("SELECT pg_sleep(30)")
        .await
        .expect_err("the session must end at expiry");
    let late = std::time::SystemTime::now()
        .duration_since(expires)
        .unwrap_or_default();
    assert!(
        late < Duration::from_secs(1),
        "terminated {late:?} after expiry"
    );
    let db = err.as_db_error().expect("a FATAL from the gateway");
    assert_eq!(db.severity(), "FATAL");
    assert_eq!(db.code().code(), "28000");
    assert!(db.message().contains("expired"));
    assert!(client.is_closed() || client.simple_query("SELECT 1").await.is_err());
}
