//! Workload identity in, short-lived grant out: `POST /v1/token` (RFC 8693) against a local
//! identity provider the test starts (real discovery and JWKS over HTTP, keys it rotates and
//! goes down with), with tokens shaped like GitHub Actions', Kubernetes' and SPIFFE ones.
//! Exchanged tokens open real psql sessions; hostile subject tokens (wrong audience or issuer,
//! expired, not yet valid, `alg: none`, HS256 signed with the public key, a `kid` of another
//! issuer, a flood of made-up `kid`s) are refused without a fetch storm; every request lands in
//! the audit log.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_integration_tests::idp::{ACTIONS_REQUEST_TOKEN, TestIdp, TestKey};
use sluice_integration_tests::{
    GatewayOptions, TestGateway, audit_records_when, closed_after, http, psql_conninfo,
    sluice_binary,
};

pub(crate) const AUD: &str = "sluice-test";

pub(crate) fn issuer_toml(name: &str, idp: &TestIdp, preset: &str, extra: &str) -> String {
    format!(
        r#"
[[identity.issuers]]
name = "{name}"
preset = "{preset}"
issuer = "{iss}"
audience = "{AUD}"
{extra}
"#,
        iss = idp.issuer
    )
}

pub(crate) async fn gateway(issuers: &[String]) -> TestGateway {
    TestGateway::start_with(GatewayOptions {
        extra_toml: issuers.concat(),
        max_ttl: Duration::from_secs(3600),
        ..GatewayOptions::default()
    })
    .await
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let v: String = url_encode(v);
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Exchanges `subject_token` for database `app`; returns the status and the JSON answer.
pub(crate) async fn exchange(
    gw: &TestGateway,
    subject_token: &str,
    extra: &[(&str, &str)],
) -> (u16, Value) {
    let mut pairs = vec![
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("subject_token", subject_token),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ("audience", "app"),
        ("reason", "nightly report"),
    ];
    for (k, v) in extra {
        pairs.retain(|(key, _)| key != k);
        pairs.push((k, v));
    }
    let body = form(&pairs);
    let (code, text) = exchange_raw(gw, &body).await;
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn exchange_raw(gw: &TestGateway, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
    let request = format!(
        "POST /v1/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_owned())
}

pub(crate) fn github_claims(idp: &TestIdp, repository: &str, git_ref: &str) -> Value {
    idp.claims(
        AUD,
        3600,
        json!({
            "sub": format!("repo:{repository}:ref:{git_ref}"),
            "repository": repository,
            "repository_id": "742",
            "repository_owner": repository.split('/').next().unwrap(),
            "ref": git_ref,
            "environment": "production",
            "job_workflow_ref": format!("{repository}/.github/workflows/report.yml@{git_ref}"),
            "run_id": "9001",
        }),
    )
}

/// The audit log's token exchange records, once `done` holds for them.
pub(crate) async fn audit(gw: &TestGateway, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let exchanges = |all: &[Value]| -> Vec<Value> {
        all.iter()
            .filter(|r| r["type"] == "token_exchange")
            .cloned()
            .collect()
    };
    let all = audit_records_when(&gw.config.audit_path(), |all| done(&exchanges(all))).await;
    exchanges(&all)
}

pub(crate) fn outcomes(records: &[Value], outcome: &str) -> usize {
    records.iter().filter(|r| r["outcome"] == outcome).count()
}

#[tokio::test]
async fn a_github_actions_token_is_exchanged_for_a_psql_session_within_its_grant() {
    let key = TestKey::rs256("gh-1");
    let idp = TestIdp::start("github", vec![key.clone()]).await;
    let gw = gateway(&[issuer_toml(
        "github",
        &idp,
        "github-actions",
        "subjects = [\"acme/*@refs/heads/main\"]\ndatabases = [\"app\"]\nmax_ttl = \"10m\"",
    )])
    .await;

    let token = key.sign(&github_claims(&idp, "acme/reports", "refs/heads/main"));
    let (code, issued) = exchange(&gw, &token, &[("expires_in", "100000")]).await;
    assert_eq!(code, 200, "{issued}");
    assert_eq!(
        issued["issued_token_type"],
        "urn:ietf:params:oauth:token-type:jwt"
    );
    assert_eq!(issued["expires_in"], 600, "capped by the issuer's max_ttl");
    let sluice_token = issued["access_token"].as_str().unwrap();
    let out = gw
        .psql(
            "acme/reports@refs/heads/main",
            sluice_token,
            "require",
            &["-At", "-c", "SELECT 40 + 2"],
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");

    // A branch named to end like main is no principal at all.
    let forged = key.sign(&github_claims(
        &idp,
        "acme/reports",
        "refs/heads/x@refs/heads/main",
    ));
    let (code, answer) = exchange(&gw, &forged, &[]).await;
    assert_eq!(
        (code, answer["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // A token with 60 s left gets no more than that.
    let mut short = github_claims(&idp, "acme/reports", "refs/heads/main");
    short["exp"] = json!(short["iat"].as_i64().unwrap() + 60);
    let (code, issued_short) = exchange(&gw, &key.sign(&short), &[]).await;
    assert_eq!(code, 200, "{issued_short}");
    assert!(
        issued_short["expires_in"].as_u64().unwrap() <= 60,
        "{issued_short}"
    );

    // Another branch, another database: denied, with the reason.
    let token = key.sign(&github_claims(&idp, "acme/reports", "refs/heads/feature"));
    let (code, answer) = exchange(&gw, &token, &[]).await;
    assert_eq!(code, 403, "{answer}");
    assert_eq!(answer["error"], "access_denied");
    let token = key.sign(&github_claims(&idp, "acme/reports", "refs/heads/main"));
    let (code, answer) = exchange(&gw, &token, &[("audience", "other")]).await;
    assert_eq!(code, 403, "{answer}");
    let (code, answer) = exchange(&gw, &token, &[("reason", " ")]).await;
    assert_eq!(
        (code, answer["error"].as_str()),
        (400, Some("invalid_request"))
    );

    let records = audit(&gw, |r| {
        outcomes(r, "issued") == 2
            && outcomes(r, "denied") == 2
            && outcomes(r, "refused") == 1
            && outcomes(r, "invalid") == 1
    })
    .await;
    let issued: Vec<&Value> = records
        .iter()
        .filter(|r| r["outcome"] == "issued")
        .collect();
    assert_eq!(issued.len(), 2, "{records:#?}");
    assert_eq!(issued[0]["issuer"], "github");
    assert_eq!(issued[0]["principal"], "acme/reports@refs/heads/main");
    assert_eq!(issued[0]["database"], "app");
    assert_eq!(issued[0]["reason"], "nightly report");
    assert_eq!(issued[0]["ttl_seconds"], 600);
    // The psql session's record names the identity provider behind its token.
    let started = std::fs::read_to_string(gw.config.audit_path()).unwrap();
    let start = started
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["type"] == "session_start" && r["subject"] == "acme/reports@refs/heads/main")
        .expect("the session was recorded");
    assert_eq!(start["idp"], idp.issuer.as_str());
    let (_, metrics) = http(gw.admin, "GET", "/metrics", None, None).await;
    assert!(
        metrics.contains(r#"sluice_token_exchanges_total{issuer="github",outcome="issued"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn kubernetes_and_spiffe_tokens_get_their_principals_and_keys_never_cross_issuers() {
    let (k8s_key, spiffe_key) = (TestKey::es256("k8s-1"), TestKey::es256("spiffe-1"));
    let k8s = TestIdp::start("cluster", vec![k8s_key.clone()]).await;
    let spiffe = TestIdp::start("spiffe", vec![spiffe_key.clone()]).await;
    let gw = gateway(&[
        issuer_toml(
            "prod-cluster",
            &k8s,
            "kubernetes",
            "subjects = [\"system:serviceaccount:jobs:*\"]\ndatabases = [\"app\"]\ngroups_claim = \"groups\"\nallowed_groups = [\"etl-readers\"]",
        ),
        issuer_toml(
            "mesh",
            &spiffe,
            "spiffe",
            &format!(
                "subjects = [\"spiffe://example.org/etl\"]\ndatabases = [\"app\"]\njwks_url = \"{}/jwks\"",
                spiffe.issuer
            ),
        ),
    ])
    .await;
    let k8s_claims = k8s.claims(
        AUD,
        300,
        json!({
            "sub": "system:serviceaccount:jobs:etl",
            // The provider's groups: only the allowed one is carried, never an admin group.
            "groups": ["etl-readers", "sluice-admins"],
            "kubernetes.io": {
                "namespace": "jobs",
                "serviceaccount": {"name": "etl", "uid": "7c1"},
                "pod": {"name": "etl-5d8", "uid": "9a2"},
            },
        }),
    );
    let (code, issued) = exchange(&gw, &k8s_key.sign(&k8s_claims), &[]).await;
    assert_eq!(code, 200, "{issued}");
    let client = gw
        .connect(
            "system:serviceaccount:jobs:etl",
            issued["access_token"].as_str().unwrap(),
        )
        .await
        .unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    let (code, _) = http(
        gw.admin,
        "GET",
        "/v1/revocations",
        Some(issued["access_token"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(code, 403, "an outside group never becomes an admin group");

    let svid = spiffe.claims(AUD, 300, json!({"sub": "spiffe://example.org/etl"}));
    let (code, issued) = exchange(&gw, &spiffe_key.sign(&svid), &[]).await;
    assert_eq!(code, 200, "{issued}");

    // The cluster's token signed by the mesh's key, under the mesh's kid: the cluster's keys
    // alone check it, and they have no such kid.
    let (code, answer) = exchange(&gw, &spiffe_key.sign(&k8s_claims), &[]).await;
    assert_eq!(
        (code, answer["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // And signed by the mesh's key under the cluster's kid: the signature does not hold.
    let forged = spiffe_key.sign_as(&k8s_claims, Some("k8s-1"));
    let (code, _) = exchange(&gw, &forged, &[]).await;
    assert_eq!(code, 400);
    let classes: Vec<Value> = audit(&gw, |r| outcomes(r, "refused") == 2)
        .await
        .iter()
        .filter(|r| r["outcome"] == "refused")
        .map(|r| r["why"].clone())
        .collect();
    assert_eq!(classes, vec![json!("unknown_key"), json!("bad_signature")]);
}

#[tokio::test]
async fn hostile_subject_tokens_are_refused() {
    let key = TestKey::rs256("gh-1");
    let idp = TestIdp::start("github", vec![key.clone()]).await;
    let gw = gateway(&[issuer_toml(
        "github",
        &idp,
        "github-actions",
        "subjects = [\"*\"]\ndatabases = [\"app\"]",
    )])
    .await;
    let good = github_claims(&idp, "acme/reports", "refs/heads/main");
    let with = |changes: Value| {
        let mut claims = good.clone();
        for (k, v) in changes.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let now = good["iat"].as_i64().unwrap();
    let b64 = |v: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    // HS256 with the RSA public key (PEM) as the HMAC secret: the classic confusion attack.
    let public_pem = key.public_pem.clone().unwrap();
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some("gh-1".into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &good,
        &jsonwebtoken::EncodingKey::from_secret(public_pem.as_bytes()),
    )
    .unwrap();
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": "gh-1"})),
        b64(&good)
    );
    let unpublished = TestKey::rs256("gh-1");
    let cases = [
        (
            "wrong audience",
            key.sign(&with(json!({"aud": "someone-else"}))),
            "wrong_audience",
        ),
        (
            "unknown issuer",
            key.sign(&with(json!({"iss": "https://evil.example"}))),
            "unknown_issuer",
        ),
        (
            "expired",
            key.sign(&with(json!({"exp": now - 120}))),
            "expired",
        ),
        (
            "expires after the year 9999",
            key.sign(&with(json!({"exp": u64::MAX}))),
            "malformed",
        ),
        (
            "expires after the year 9999, written as a float",
            key.sign(&with(json!({"exp": 1.8e19}))),
            "malformed",
        ),
        (
            "not yet valid",
            key.sign(&with(json!({"nbf": now + 600}))),
            "not_yet_valid",
        ),
        (
            "issued in the future",
            key.sign(&with(json!({"iat": now + 600}))),
            "not_yet_valid",
        ),
        (
            "issued in the future, written as a float",
            key.sign(&with(json!({"iat": now as f64 + 600.5}))),
            "not_yet_valid",
        ),
        (
            "a not-before that is not a time",
            key.sign(&with(json!({"nbf": "tomorrow"}))),
            "malformed",
        ),
        ("alg none", none, "malformed"),
        ("HS256 with the public key", hs256, "algorithm_refused"),
        (
            "a published kid, another key",
            unpublished.sign(&good),
            "bad_signature",
        ),
        (
            "no principal",
            key.sign(&with(json!({"repository": null}))),
            "no_principal",
        ),
        ("garbage", "not.a.token".to_owned(), "malformed"),
        (
            "oversized",
            format!("{}{}", key.sign(&good), "A".repeat(20_000)),
            "too_large",
        ),
    ];
    for (why, token, _) in &cases {
        let (code, answer) = exchange(&gw, token, &[]).await;
        assert_eq!(code, 400, "{why}: {answer}");
        assert_eq!(answer["error"], "invalid_grant", "{why}");
    }
    let records = audit(&gw, |r| outcomes(r, "refused") == cases.len()).await;
    for ((why, _, class), record) in cases.iter().zip(&records) {
        assert_eq!(record["why"], *class, "{why}");
    }
    // The good token still works.
    let (code, answer) = exchange(&gw, &key.sign(&good), &[]).await;
    assert_eq!(code, 200, "{answer}");
}

#[tokio::test]
async fn a_flood_of_made_up_key_ids_fetches_the_keys_at_most_once_per_cooldown() {
    let key = TestKey::es256("k-1");
    let idp = TestIdp::start("flood", vec![key.clone()]).await;
    let gw = gateway(&[issuer_toml(
        "oidc",
        &idp,
        "oidc",
        "subjects = [\"*\"]\ndatabases = [\"app\"]\nrefetch_cooldown = \"1h\"",
    )])
    .await;
    let claims = idp.claims(AUD, 300, json!({"sub": "someone"}));
    let (code, _) = exchange(&gw, &key.sign(&claims), &[]).await;
    assert_eq!(code, 200);
    assert_eq!(idp.jwks_fetches(), 1);
    for i in 0..50 {
        let junk = key.sign_as(&claims, Some(&format!("junk-{i}")));
        let (code, _) = exchange(&gw, &junk, &[]).await;
        assert_eq!(code, 400);
    }
    assert!(
        idp.jwks_fetches() <= 2,
        "{} fetches for 50 unknown kids",
        idp.jwks_fetches()
    );
}

#[tokio::test]
async fn rotated_keys_are_picked_up_and_cached_keys_serve_while_the_provider_is_down() {
    let (old, new) = (TestKey::es256("old"), TestKey::es256("new"));
    let idp = TestIdp::start("rotating", vec![old.clone()]).await;
    let gw = gateway(&[issuer_toml(
        "oidc",
        &idp,
        "oidc",
        "subjects = [\"*\"]\ndatabases = [\"app\"]\nrefetch_cooldown = \"200ms\"",
    )])
    .await;
    let claims = idp.claims(AUD, 300, json!({"sub": "someone"}));
    let (code, _) = exchange(&gw, &old.sign(&claims), &[]).await;
    assert_eq!(code, 200);

    idp.rotate(vec![new.clone()]);
    // Within one cooldown of the last fetch the new kid is unknown; after it, fetched.
    let started = Instant::now();
    loop {
        let (code, answer) = exchange(&gw, &new.sign(&claims), &[]).await;
        if code == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never picked up: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    idp.set_down(true);
    let fetches = idp.jwks_fetches();
    let (code, answer) = exchange(&gw, &new.sign(&claims), &[]).await;
    assert_eq!(
        code, 200,
        "cached keys serve while the provider is down: {answer}"
    );
    // A kid nobody published is still refused, whatever the provider's state.
    let (code, _) = exchange(&gw, &old.sign_as(&claims, Some("other")), &[]).await;
    assert_eq!(code, 400);
    assert!(idp.jwks_fetches() >= fetches);
}

#[tokio::test]
async fn revoking_an_issuer_ends_sessions_opened_with_its_exchanged_tokens_and_stops_exchanges() {
    let key = TestKey::es256("k-1");
    let idp = TestIdp::start("revoked", vec![key.clone()]).await;
    let gw = gateway(&[issuer_toml(
        "oidc",
        &idp,
        "oidc",
        "subjects = [\"*\"]\ndatabases = [\"app\"]",
    )])
    .await;
    let claims = idp.claims(AUD, 300, json!({"sub": "worker"}));
    let (code, issued) = exchange(&gw, &key.sign(&claims), &[]).await;
    assert_eq!(code, 200, "{issued}");
    let client = gw
        .connect("worker", issued["access_token"].as_str().unwrap())
        .await
        .unwrap();
    client.simple_query("SELECT 1").await.unwrap();

    let admin = gw.token_with_groups("alice", &["sluice-admins"]);
    // Revoking the outside token (its jti) ends the session opened with the token it was
    // exchanged for.
    let at = gw
        .revoke(json!({"jti": claims["jti"], "reason": "stolen"}))
        .await;
    closed_after(&client, at).await;
    let claims = idp.claims(AUD, 300, json!({"sub": "worker"}));
    let (code, issued) = exchange(&gw, &key.sign(&claims), &[]).await;
    assert_eq!(code, 200, "{issued}");
    let client = gw
        .connect("worker", issued["access_token"].as_str().unwrap())
        .await
        .unwrap();
    // An issuer is named as its tokens' iss; anything else would revoke nothing.
    let body = json!({"issuer": "oidc", "reason": "by name"}).to_string();
    let (code, _) = http(
        gw.admin,
        "POST",
        "/v1/revocations",
        Some(&admin),
        Some(&body),
    )
    .await;
    assert_eq!(code, 400);
    let body = json!({"issuer": idp.issuer, "reason": "provider compromised"}).to_string();
    let (code, answer) = http(
        gw.admin,
        "POST",
        "/v1/revocations",
        Some(&admin),
        Some(&body),
    )
    .await;
    assert_eq!(code, 201, "{answer}");
    closed_after(&client, Instant::now()).await;
    let (code, answer) = exchange(&gw, &key.sign(&claims), &[]).await;
    assert_eq!(code, 403, "{answer}");
    assert!(
        answer["error_description"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
}

#[tokio::test]
async fn sluice_access_request_turns_a_github_actions_identity_into_a_psql_line() {
    let key = TestKey::rs256("gh-1");
    let idp = TestIdp::start("github", vec![key.clone()]).await;
    let gw = gateway(&[issuer_toml(
        "github",
        &idp,
        "github-actions",
        "subjects = [\"acme/*@refs/heads/main\"]\ndatabases = [\"app\"]",
    )])
    .await;
    idp.set_actions_token(&key.sign(&github_claims(&idp, "acme/reports", "refs/heads/main")));
    // As in a GitHub Actions job with `permissions: id-token: write`.
    let out = tokio::process::Command::new(sluice_binary())
        .args(["access", "request", "--server"])
        .arg(gw.admin.to_string())
        .args([
            "--database",
            "app",
            "--reason",
            "nightly report",
            "--ttl",
            "5m",
            "--psql",
        ])
        .args(["--gateway", &format!("127.0.0.1:{}", gw.port())])
        .env(
            "ACTIONS_ID_TOKEN_REQUEST_URL",
            format!("{}/actions-token?api-version=2.0", idp.issuer),
        )
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", ACTIONS_REQUEST_TOKEN)
        .output()
        .await
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "{line}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // PGPASSWORD=<token> psql "host=... user=acme/reports@refs/heads/main ..."
    let (password, conninfo) = line
        .strip_prefix("PGPASSWORD=")
        .and_then(|rest| rest.split_once(" psql \""))
        .expect("a psql line");
    let conninfo = conninfo.trim_end_matches('"');
    assert!(
        conninfo.contains("user=acme/reports@refs/heads/main"),
        "{conninfo}"
    );
    assert_eq!(
        psql_conninfo(conninfo, password, "SELECT 6 * 7").await,
        "42"
    );

    // From standard input, a token alone; a refused one says why.
    let other_branch = key.sign(&github_claims(&idp, "acme/reports", "refs/heads/dev"));
    let mut child = tokio::process::Command::new(sluice_binary())
        .args(["access", "request", "--server"])
        .arg(gw.admin.to_string())
        .args(["--database", "app", "--reason", "r", "--subject-token", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(other_branch.as_bytes()).await.unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("access_denied"), "{stderr}");
}
