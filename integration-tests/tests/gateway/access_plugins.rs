//! Requests for access decided by access plugins: the stock `access-rules` component, built from
//! `plugins/`, reads rules from its manifest and issues, asks people, or denies. A request
//! that needs approval waits in the approvals queue: the requester (the real `sluice access
//! request`) waits while another person approves through the real `sluice approvals` CLI, and
//! then gets its token, once. Agents acting for a person get a token naming both. A plugin that
//! fails, or grants what the issuer does not allow, refuses the request.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_integration_tests::idp::{TestIdp, TestKey};
use sluice_integration_tests::{
    GatewayOptions, PluginSpec, TestGateway, audit_records_when, closed_after, http, jwt_claims,
    psql_conninfo, sluice_binary,
};

use super::token_exchange::{AUD, exchange, github_claims, issuer_toml};

/// A gateway trusting `issuers`, with `access-rules` loaded with `rules`.
async fn gateway(issuers: &[String], rules: &str) -> TestGateway {
    let manifest = format!("[config]\nrules = '''\n{rules}\n'''\n");
    TestGateway::start_with(GatewayOptions {
        extra_toml: format!(
            "{}\n[approvals]\napprover_groups = [\"dba\"]\ntimeout = \"60s\"\n",
            issuers.concat()
        ),
        max_ttl: Duration::from_secs(3600),
        plugins: vec![PluginSpec::with("access-rules", "access-rules", &manifest)],
        ..GatewayOptions::default()
    })
    .await
}

fn github(idp: &TestIdp) -> String {
    issuer_toml(
        "github",
        idp,
        "github-actions",
        "subjects = [\"*\"]\ndatabases = [\"app\"]\nallowed_groups = [\"readers\", \"writers\"]",
    )
}

const GITHUB_RULES: &str = "\
issuer=github repository=acme/reports ref=refs/heads/main db=app -> issue ttl=2m read-only groups=readers
issuer=github repository=acme/reports environment=production db=app -> ask approvers=dba ttl=10m groups=writers production writes need a person";

#[tokio::test]
async fn access_rules_issue_a_short_read_only_grant_to_main_and_send_production_to_people() {
    let key = TestKey::rs256("gh-1");
    let idp = TestIdp::start("github", vec![key.clone()]).await;
    let gw = gateway(&[github(&idp)], GITHUB_RULES).await;

    let main = key.sign(&github_claims(&idp, "acme/reports", "refs/heads/main"));
    let (code, issued) = exchange(&gw, &main, &[("expires_in", "900")]).await;
    assert_eq!(code, 200, "{issued}");
    assert!(issued["expires_in"].as_u64().unwrap() <= 120, "{issued}");
    let token = issued["access_token"].as_str().unwrap();
    let claims = jwt_claims(token);
    assert_eq!(claims["read_only"], true);
    assert_eq!(claims["groups"], json!(["readers"]));
    let client = gw
        .connect("acme/reports@refs/heads/main", token)
        .await
        .unwrap();
    let row = client
        .query_one("SHOW default_transaction_read_only", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "on");

    // Another branch of the same repository, in the production environment: people decide.
    let dev = key.sign(&github_claims(&idp, "acme/reports", "refs/heads/dev"));
    let (code, pending) = exchange(&gw, &dev, &[]).await;
    assert_eq!(code, 400, "{pending}");
    assert_eq!(pending["error"], "authorization_pending");
    let id = pending["approval_id"].as_str().unwrap().to_owned();
    let handle = pending["request_id"].as_str().unwrap().to_owned();
    assert!(handle.starts_with(&format!("{id}.")) && handle.len() > id.len() + 32);
    let alice = gw.token_with_groups("alice", &["dba"]);
    let view = gw.approval(&id, "alice", &["dba"]).await;
    // Approvers see the id; only the requester holds what collects the token.
    assert!(!view.to_string().contains(&handle[id.len() + 1..]));
    assert_eq!(view["kind"], "access");
    assert_eq!(view["subject"], "acme/reports@refs/heads/dev");
    assert_eq!(view["groups"], json!(["writers"]));
    assert_eq!(view["access"]["lifetime_secs"], 600);
    assert_eq!(view["access"]["reason"], "nightly report");
    assert_eq!(view["reason"], "production writes need a person");
    let (code, _) = http(gw.admin, "GET", "/v1/approvals", Some(&alice), None).await;
    assert_eq!(code, 200);
    let path = format!("/v1/approvals/{id}/approve");
    let (code, body) = http(gw.admin, "POST", &path, Some(&alice), Some("{}")).await;
    assert_eq!(code, 200, "{body}");
    // Collected by the requester only (another branch of the repository holds a valid token
    // of the same issuer, and even the handle), once.
    let (code, stolen) = exchange(&gw, &main, &[("request_id", &handle)]).await;
    assert_eq!(code, 400, "{stolen}");
    assert_eq!(stolen["error"], "invalid_grant");
    let (code, collected) = exchange(&gw, &dev, &[("request_id", &handle)]).await;
    assert_eq!(code, 200, "{collected}");
    assert_eq!(
        jwt_claims(collected["access_token"].as_str().unwrap())["groups"],
        json!(["writers"])
    );
    let (code, again) = exchange(&gw, &dev, &[("request_id", &handle)]).await;
    assert_eq!(code, 400, "{again}");
    assert!(
        again["error_description"]
            .as_str()
            .unwrap()
            .contains("already handed out"),
        "{again}"
    );

    // Another repository matches no rule: denied, by the plugin, with its reason.
    let other = key.sign(&github_claims(&idp, "acme/billing", "refs/heads/main"));
    let (code, denied) = exchange(&gw, &other, &[]).await;
    assert_eq!(code, 403, "{denied}");
    assert!(
        denied["error_description"]
            .as_str()
            .unwrap()
            .contains("access-rules: no access rule"),
        "{denied}"
    );
    let records = audit_records_when(&gw.config.audit_path(), |all| {
        all.iter().filter(|r| r["type"] == "token_exchange").count() >= 6
    })
    .await;
    let exchanges: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "token_exchange")
        .collect();
    let outcomes: Vec<&str> = exchanges
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "issued", "pending", "refused", "issued", "refused", "denied"
        ]
    );
    assert_eq!(exchanges[1]["approval"], id.as_str());
    let log = std::fs::read_to_string(gw.config.audit_path()).unwrap();
    assert!(
        !log.contains(&handle[id.len() + 1..]),
        "the collection secret reached the audit log"
    );
    let requested = records
        .iter()
        .find(|r| r["type"] == "approval_requested")
        .expect("the request for access is recorded");
    assert_eq!(requested["access"]["issuer"], "github");
}

#[tokio::test]
async fn a_request_that_needs_approval_waits_for_another_person_and_its_token_is_handed_out_once() {
    let key = TestKey::rs256("gh-1");
    let idp = TestIdp::start("github", vec![key.clone()]).await;
    let gw = gateway(&[github(&idp)], GITHUB_RULES).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("workload.jwt");
    let dev = key.sign(&github_claims(&idp, "acme/reports", "refs/heads/dev"));
    std::fs::write(&token_file, &dev).unwrap();

    let requester = tokio::process::Command::new(sluice_binary())
        .args(["access", "request", "--server"])
        .arg(gw.admin.to_string())
        .args(["--database", "app", "--reason", "fix the March invoices"])
        .args(["--ttl", "30m", "--wait", "60s", "--psql", "--subject-token"])
        .arg(&token_file)
        .args(["--gateway", &format!("127.0.0.1:{}", gw.port())])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // The request appears in the queue as the requester waits.
    let alice = gw.token_with_groups("alice", &["dba"]);
    let started = Instant::now();
    let id = loop {
        let list = gw.approvals_cli(&alice, &["list"]).await;
        let out = String::from_utf8_lossy(&list.stdout).into_owned();
        if let Some(line) = out.lines().find(|l| l.contains("access:")) {
            assert!(
                line.contains("acme/reports@refs/heads/dev")
                    && line.contains("fix the March invoices")
                    && line.contains("10m"),
                "{line}"
            );
            break line.split_whitespace().next().unwrap().to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{out}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Nobody approves their own request, whatever groups their token carries.
    let own = gw.token_with_groups("acme/reports@refs/heads/dev", &["dba"]);
    let refused = gw.approvals_cli(&own, &["approve", &id]).await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("their own"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let show = gw.approvals_cli(&alice, &["show", &id]).await;
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(
        shown.contains("asks for:") && shown.contains("because:    fix the March invoices"),
        "{shown}"
    );
    let approved = gw.approvals_cli(&alice, &["approve", &id]).await;
    assert!(
        approved.status.success(),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );

    let out = tokio::time::timeout(Duration::from_secs(30), requester.wait_with_output())
        .await
        .expect("the requester is answered once approved")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("waiting for approval: request {id}")),
        "{stderr}"
    );
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (password, conninfo) = line
        .strip_prefix("PGPASSWORD=")
        .and_then(|rest| rest.split_once(" psql \""))
        .expect("a psql line");
    let claims = jwt_claims(password);
    assert_eq!(claims["groups"], json!(["writers"]));
    assert!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap() <= 600);
    assert_eq!(
        psql_conninfo(conninfo.trim_end_matches('"'), password, "SELECT 6 * 7").await,
        "42"
    );

    // The approval's id alone (approvers, webhooks and logs see it) collects nothing, even for
    // the requester.
    let (code, bare) = exchange(&gw, &dev, &[("request_id", &id)]).await;
    assert_eq!(code, 400, "{bare}");
    assert_eq!(bare["error"], "invalid_grant");

    let records = audit_records_when(&gw.config.audit_path(), |all| {
        all.iter()
            .any(|r| r["type"] == "token_exchange" && r["outcome"] == "issued")
    })
    .await;
    let issued = records
        .iter()
        .find(|r| r["type"] == "token_exchange" && r["outcome"] == "issued")
        .unwrap();
    assert_eq!(issued["approval"], id.as_str());
    assert_eq!(issued["token_id"], claims["jti"]);
    let decided = records
        .iter()
        .find(|r| r["type"] == "approval_decided" && r["id"] == id.as_str())
        .expect("the decision is recorded");
    assert_eq!(decided["status"], "approved");
    assert_eq!(decided["votes"][0]["approver"], "alice");
}

#[tokio::test]
async fn a_denied_request_says_who_denied_it_and_an_undecided_one_expires() {
    let key = TestKey::rs256("gh-1");
    let idp = TestIdp::start("github", vec![key.clone()]).await;
    let rules = "\
issuer=github ref=refs/heads/hotfix db=app -> ask approvers=dba timeout=1s hotfixes expire fast
issuer=github db=app -> ask approvers=dba production";
    let gw = gateway(&[github(&idp)], rules).await;
    let dev = key.sign(&github_claims(&idp, "acme/reports", "refs/heads/dev"));
    let (code, pending) = exchange(&gw, &dev, &[]).await;
    assert_eq!(code, 400, "{pending}");
    let (id, handle) = (
        pending["approval_id"].as_str().unwrap().to_owned(),
        pending["request_id"].as_str().unwrap().to_owned(),
    );
    let alice = gw.token_with_groups("alice", &["dba"]);
    let path = format!("/v1/approvals/{id}/deny");
    let body = r#"{"reason":"not during the freeze"}"#;
    let (code, answer) = http(gw.admin, "POST", &path, Some(&alice), Some(body)).await;
    assert_eq!(code, 200, "{answer}");
    let (code, denied) = exchange(&gw, &dev, &[("request_id", &handle)]).await;
    assert_eq!(code, 403, "{denied}");
    let why = denied["error_description"].as_str().unwrap();
    assert!(
        why.contains("alice") && why.contains("not during the freeze"),
        "{why}"
    );

    let hotfix = key.sign(&github_claims(&idp, "acme/reports", "refs/heads/hotfix"));
    let (code, pending) = exchange(&gw, &hotfix, &[]).await;
    assert_eq!(code, 400, "{pending}");
    let (id, handle) = (
        pending["approval_id"].as_str().unwrap().to_owned(),
        pending["request_id"].as_str().unwrap().to_owned(),
    );
    // The requester waits in one call (long poll) past the request's timeout.
    let (code, expired) = exchange(&gw, &hotfix, &[("request_id", &handle), ("wait", "5")]).await;
    assert_eq!(code, 400, "{expired}");
    assert_eq!(expired["error"], "expired_token");
    let alice_votes = http(
        gw.admin,
        "POST",
        &format!("/v1/approvals/{id}/approve"),
        Some(&alice),
        Some("{}"),
    )
    .await;
    assert_eq!(alice_votes.0, 409, "{}", alice_votes.1);
}

#[tokio::test]
async fn an_agent_acting_for_a_person_gets_a_token_naming_both_and_revoking_the_agent_ends_it() {
    let (person_key, agent_key) = (TestKey::es256("people-1"), TestKey::es256("k8s-1"));
    let people = TestIdp::start("people", vec![person_key.clone()]).await;
    let cluster = TestIdp::start("cluster", vec![agent_key.clone()]).await;
    let rules = "\
issuer=people db=app -> issue ttl=5m
agent=system:serviceaccount:agents:* agent_issuer=cluster issuer=people db=app -> issue ttl=5m read-only";
    let gw = gateway(
        &[
            issuer_toml(
                "people",
                &people,
                "oidc",
                "subjects = [\"*\"]\ndatabases = [\"app\"]",
            ),
            issuer_toml(
                "cluster",
                &cluster,
                "kubernetes",
                "subjects = [\"system:serviceaccount:*\"]\ndatabases = [\"app\"]",
            ),
        ],
        rules,
    )
    .await;
    let person = person_key.sign(&people.claims(AUD, 300, json!({"sub": "dana"})));
    let agent = |namespace: &str| {
        agent_key.sign(&cluster.claims(
            AUD,
            300,
            json!({
                "sub": format!("system:serviceaccount:{namespace}:helper"),
                "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": "helper"}},
            }),
        ))
    };
    let jwt = "urn:ietf:params:oauth:token-type:jwt";

    // The person alone: the first rule.
    let (code, alone) = exchange(&gw, &person, &[]).await;
    assert_eq!(code, 200, "{alone}");
    let alone = alone["access_token"].as_str().unwrap().to_owned();
    assert!(jwt_claims(&alone)["act"].is_null());
    // A token from the exchange is for the database: approving and revoking are done signed in
    // or with an operator's token (an agent holding her provider token could get this one).
    let (code, _) = http(gw.admin, "GET", "/v1/approvals", Some(&alone), None).await;
    assert_eq!(code, 403);

    // An agent acting for her: only the rule written for agents, read-only, naming both.
    let helper = agent("agents");
    let (code, acting) = exchange(
        &gw,
        &person,
        &[("actor_token", &helper), ("actor_token_type", jwt)],
    )
    .await;
    assert_eq!(code, 200, "{acting}");
    let token = acting["access_token"].as_str().unwrap().to_owned();
    let claims = jwt_claims(&token);
    assert_eq!(claims["sub"], "dana");
    assert_eq!(claims["act"]["sub"], "system:serviceaccount:agents:helper");
    assert_eq!(claims["read_only"], true);
    // An agent of another namespace matches no rule.
    let stranger = agent("batch");
    let (code, denied) = exchange(
        &gw,
        &person,
        &[("actor_token", &stranger), ("actor_token_type", jwt)],
    )
    .await;
    assert_eq!(code, 403, "{denied}");

    // The acting token opens sessions as her, recorded with the actor; it may not approve or
    // revoke in her name.
    let client = gw.connect("dana", &token).await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    let start = gw.audit_record("session_start").await;
    assert_eq!(start["subject"], "dana");
    assert_eq!(start["actor"], "system:serviceaccount:agents:helper");
    let (code, _) = http(gw.admin, "GET", "/v1/approvals", Some(&token), None).await;
    assert_eq!(code, 403);

    // Revoking the agent ends the sessions it acts in.
    let revoked_at = gw
        .revoke(json!({
            "subject": "system:serviceaccount:agents:helper",
            "reason": "agent compromised",
        }))
        .await;
    assert!(closed_after(&client, revoked_at).await < Duration::from_secs(1));
}

#[tokio::test]
async fn an_access_plugin_that_fails_or_grants_beyond_the_issuer_refuses_the_request() {
    let key = TestKey::rs256("gh-1");
    let idp = TestIdp::start("github", vec![key.clone()]).await;
    // Rules that cannot be read: the plugin reports an error; nothing is issued.
    let gw = gateway(&[github(&idp)], "this is not a rule").await;
    let main = key.sign(&github_claims(&idp, "acme/reports", "refs/heads/main"));
    let (code, refused) = exchange(&gw, &main, &[]).await;
    assert_eq!(code, 503, "{refused}");
    assert_eq!(refused["error"], "temporarily_unavailable");
    assert!(
        refused["error_description"]
            .as_str()
            .unwrap()
            .contains("access-rules"),
        "{refused}"
    );

    // A group the issuer does not allow is never granted, whatever the plugin says.
    let gw = gateway(
        &[github(&idp)],
        "issuer=github db=app -> issue groups=sluice-admins",
    )
    .await;
    let (code, refused) = exchange(&gw, &main, &[]).await;
    assert_eq!(code, 503, "{refused}");
    assert!(
        refused["error_description"]
            .as_str()
            .unwrap()
            .contains("sluice-admins"),
        "{refused}"
    );
    let records = audit_records_when(&gw.config.audit_path(), |all| {
        all.iter().any(|r| r["type"] == "token_exchange")
    })
    .await;
    let record = records
        .iter()
        .find(|r| r["type"] == "token_exchange")
        .unwrap();
    assert_eq!(record["outcome"], "refused");
}
