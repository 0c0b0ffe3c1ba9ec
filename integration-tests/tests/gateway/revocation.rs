//! Taking access back: a revocation (one token, a subject, an issuer) made through the admin API
//! or `sluice token revoke` ends every live session using a matching token at once — psql in
//! the middle of a statement and an idle driver connection alike — refuses the token at login,
//! is recorded in the audit log and the metrics, and survives a restart. Only members of
//! `[admin] admin_groups` may revoke, and a revoked token is refused by the admin API too.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice::config::Config;
use sluice::proxy::{Gateway, Shared};
use sluice::services::Services;
use sluice_integration_tests::{
    TestGateway, audit_records_when, client_config, closed_after, connect_with, error_message,
    http, sluice_binary, sqlstate,
};

/// The audit log's records once `done` holds for them.
async fn audit_when(gw: &TestGateway, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    audit_records_when(&gw.config.audit_path(), done).await
}

fn count(all: &[Value], kind: &str, field: &str, value: &str) -> usize {
    all.iter()
        .filter(|r| r["type"] == kind && r[field] == value)
        .count()
}

async fn revoke(gw: &TestGateway, admin_token: &str, body: Value) -> (u16, Value) {
    let (code, text) = http(
        gw.admin,
        "POST",
        "/v1/revocations",
        Some(admin_token),
        Some(&body.to_string()),
    )
    .await;
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Waits until Postgres runs `query` in some session (seen by `watcher`, a session of another
/// subject on the same upstream role).
async fn until_running(watcher: &tokio_postgres::Client, query: &str) {
    let started = Instant::now();
    loop {
        let rows = watcher
            .query(
                "SELECT 1 FROM pg_stat_activity WHERE query = $1 AND state = 'active'",
                &[&query],
            )
            .await
            .unwrap();
        if !rows.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{query} never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn revoking_a_token_ends_its_live_sessions_within_a_second_and_refuses_it_at_login() {
    let gw = TestGateway::start().await;
    let claims = gw.claims("agent", Duration::from_secs(300));
    let jti = claims.jti.clone();
    let token = gw.sign(&claims);
    let admin = gw.token_with_groups("alice", &["sluice-admins"]);
    let bystander = gw
        .connect("bystander", &gw.token("bystander"))
        .await
        .unwrap();
    let driver = gw.connect("agent", &token).await.unwrap();
    driver.simple_query("SELECT 1").await.unwrap();
    // Unique to this test: other tests sleep on the same Postgres.
    let sleep = format!("SELECT pg_sleep(30), '{jti}'");
    let sleep = sleep.as_str();

    let psql = async {
        let out = gw.psql("agent", &token, "require", &["-c", sleep]).await;
        (out, Instant::now())
    };
    let revocation = async {
        until_running(&bystander, sleep).await;
        let (code, view) = revoke(
            &gw,
            &admin,
            json!({"jti": jti, "reason": "leaked in a CI log"}),
        )
        .await;
        assert_eq!(code, 201, "{view}");
        let at = Instant::now();
        (view, at, closed_after(&driver, at).await)
    };
    let ((psql, psql_done), (view, revoked_at, driver_took)) = tokio::join!(psql, revocation);
    let psql_took = psql_done - revoked_at;
    eprintln!("revocation to session end: psql {psql_took:?}, tokio-postgres {driver_took:?}");
    assert_eq!(view["kind"], "jti");
    assert_eq!(view["value"], jti.as_str());
    assert_eq!(view["by"], "alice");
    let stderr = String::from_utf8_lossy(&psql.stderr);
    assert!(!psql.status.success());
    assert!(
        stderr.contains("its token was revoked") && stderr.contains("leaked in a CI log"),
        "{stderr}"
    );
    assert!(
        psql_took < Duration::from_secs(1),
        "psql ended {psql_took:?} after"
    );
    assert!(
        driver_took < Duration::from_secs(1),
        "the driver ended {driver_took:?} after"
    );

    // Other sessions go on; the token is refused at login; another token of the subject works.
    bystander.simple_query("SELECT 1").await.unwrap();
    let err = gw.connect("agent", &token).await.unwrap_err();
    assert_eq!(sqlstate(&err), "28P01");
    assert!(
        error_message(&err).contains("revoked"),
        "{}",
        error_message(&err)
    );
    let fresh = gw.connect("agent", &gw.token("agent")).await.unwrap();
    fresh.simple_query("SELECT 1").await.unwrap();

    let all = audit_when(&gw, |all| {
        count(all, "session_end", "reason", "revoked") >= 2
            && count(all, "login_failure", "reason", "revoked") == 1
    })
    .await;
    let made: Vec<&Value> = all.iter().filter(|r| r["type"] == "revocation").collect();
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(made[0]["kind"], "jti");
    assert_eq!(made[0]["value"], jti.as_str());
    assert_eq!(made[0]["by"], "alice");
    assert_eq!(made[0]["reason"], "leaked in a CI log");
    let (_, metrics) = http(gw.admin, "GET", "/metrics", None, None).await;
    assert!(metrics.contains("sluice_revocations_total 1"), "{metrics}");
    assert!(
        metrics.contains("sluice_sessions_revoked_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn revoking_a_subject_with_the_cli_ends_all_its_sessions_and_refuses_its_new_tokens() {
    let gw = TestGateway::start().await;
    let admin = gw.token_with_groups("alice", &["sluice-admins"]);
    let first = gw.connect("bot", &gw.token("bot")).await.unwrap();
    let second = gw.connect("bot", &gw.token("bot")).await.unwrap();
    let other = gw.connect("human", &gw.token("human")).await.unwrap();
    let out = tokio::process::Command::new(sluice_binary())
        .args(["token", "revoke", "--server"])
        .arg(gw.admin.to_string())
        .args([
            "--subject",
            "bot",
            "--reason",
            "compromised runner",
            "--for",
            "10m",
        ])
        .env("SLUICE_TOKEN", &admin)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("subject bot revoked until"), "{stdout}");
    let at = Instant::now();
    closed_after(&first, at).await;
    closed_after(&second, at).await;
    other.simple_query("SELECT 1").await.unwrap();
    // A token made after the revocation is refused too, while it lasts.
    let err = gw.connect("bot", &gw.token("bot")).await.unwrap_err();
    assert_eq!(sqlstate(&err), "28P01");

    let out = tokio::process::Command::new(sluice_binary())
        .args(["token", "revocations", "--server"])
        .arg(gw.admin.to_string())
        .env("SLUICE_TOKEN", &admin)
        .output()
        .await
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("subject bot  by alice"), "{listed}");
    assert!(listed.contains("compromised runner"), "{listed}");
}

#[tokio::test]
async fn only_admin_group_members_may_revoke_and_a_revoked_admin_token_is_refused_there_too() {
    let gw = TestGateway::start().await;
    let body = json!({"subject": "bot", "reason": "r"});
    let (code, _) = http(
        gw.admin,
        "POST",
        "/v1/revocations",
        None,
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(code, 401);
    let approver = gw.token_with_groups("bob", &["approvers"]);
    let (code, view) = revoke(&gw, &approver, body.clone()).await;
    assert_eq!(code, 403, "{view}");
    let (code, _) = http(gw.admin, "GET", "/v1/revocations", Some(&approver), None).await;
    assert_eq!(code, 403);

    let claims = {
        let mut c = gw.claims("alice", Duration::from_secs(300));
        c.groups = vec!["sluice-admins".into()];
        c
    };
    let admin = gw.sign(&claims);
    for (bad, why) in [
        (
            json!({"subject": "bot", "jti": "x", "reason": "r"}),
            "two targets",
        ),
        (json!({"reason": "r"}), "no target"),
        (json!({"subject": "bot", "reason": " "}), "no reason"),
        (json!({"subject": "", "reason": "r"}), "an empty value"),
        (
            json!({"subject": "bot", "reason": "r", "for_seconds": 0}),
            "no time",
        ),
    ] {
        let (code, view) = revoke(&gw, &admin, bad).await;
        assert_eq!(code, 400, "{why}: {view}");
    }
    let (code, view) = revoke(&gw, &admin, json!({"jti": claims.jti, "reason": "rotated"})).await;
    assert_eq!(code, 201, "{view}");
    let (code, _) = http(gw.admin, "GET", "/v1/revocations", Some(&admin), None).await;
    assert_eq!(code, 401, "the revoked admin token is refused");
    let other_admin = gw.token_with_groups("carol", &["sluice-admins"]);
    let (code, list) = http(gw.admin, "GET", "/v1/revocations", Some(&other_admin), None).await;
    assert_eq!(code, 200);
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
}

#[tokio::test]
async fn a_revocation_survives_a_restart_of_the_gateway() {
    let gw = TestGateway::start().await;
    let admin = gw.token_with_groups("alice", &["sluice-admins"]);
    let token = gw.token("agent");
    let (code, view) = revoke(&gw, &admin, json!({"subject": "agent", "reason": "left"})).await;
    assert_eq!(code, 201, "{view}");
    gw.gateway.shutdown(Duration::from_secs(1)).await;

    // The same configuration (state store included) started again.
    let config = Config::load(&gw.config_path).unwrap();
    let restarted = Gateway::start(Shared::from_services(Services::build(config).unwrap()))
        .await
        .unwrap();
    let port = restarted.local_addr().port();
    let err = connect_with(client_config(port, "agent", &token))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "28P01");
    assert!(
        error_message(&err).contains("revoked"),
        "{}",
        error_message(&err)
    );
    let other = connect_with(client_config(port, "someone", &gw.token("someone")))
        .await
        .unwrap();
    other.simple_query("SELECT 1").await.unwrap();
}
