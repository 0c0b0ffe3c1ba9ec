//! Approvers sign in to the approvals page through an OpenID Connect provider (the local one
//! the test starts: real discovery, authorization code with PKCE, ID tokens signed with the
//! keys it publishes), in a real headless Chromium, approve a request for access and revoke a
//! subject there.

use std::net::SocketAddr;

use serde_json::json;
use sluice_integration_tests::idp::{TestIdp, TestKey};
use sluice_integration_tests::{
    GatewayOptions, PluginSpec, TestGateway, audit_records_when, browser_script, free_port, http,
};

use super::token_exchange::{exchange, github_claims, issuer_toml};

#[tokio::test]
async fn an_approver_signs_in_through_the_provider_in_chromium_approves_a_request_for_access_and_revokes_a_subject()
 {
    let (people_key, gh_key) = (TestKey::es256("people-1"), TestKey::rs256("gh-1"));
    let people = TestIdp::start("people", vec![people_key.clone()]).await;
    let github = TestIdp::start("github", vec![gh_key.clone()]).await;
    // The provider's groups: only the allowed ones are let through.
    people.sign_in_as(json!({"sub": "alice", "groups": ["dba", "sluice-admins", "outsiders"]}));
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let rules = "issuer=github repository=acme/reports db=app -> ask approvers=dba ttl=10m reports need a person";
    let gw = TestGateway::start_with(GatewayOptions {
        extra_toml: [
            issuer_toml(
                "github",
                &github,
                "github-actions",
                "subjects = [\"*\"]\ndatabases = [\"app\"]",
            ),
            issuer_toml(
                "people",
                &people,
                "oidc",
                "subjects = [\"alice\"]\ndatabases = [\"app\"]\ngroups_claim = \"groups\"\nallowed_groups = [\"dba\", \"sluice-admins\"]",
            ),
            format!(
                "[approvals]\napprover_groups = [\"dba\"]\ntimeout = \"60s\"\n\n[admin.sign_in]\nissuer = \"people\"\nredirect_url = \"http://{admin}/approvals/callback\"\n"
            ),
        ]
        .concat(),
        plugins: vec![PluginSpec::with(
            "access-rules",
            "access-rules",
            &format!("[config]\nrules = '''\n{rules}\n'''\n"),
        )],
        admin_addr: Some(admin),
        ..GatewayOptions::default()
    })
    .await;
    let workflow = gh_key.sign(&github_claims(&github, "acme/reports", "refs/heads/dev"));
    let (code, pending) = exchange(&gw, &workflow, &[]).await;
    assert_eq!(code, 400, "{pending}");
    let (id, handle) = (
        pending["approval_id"].as_str().unwrap().to_owned(),
        pending["request_id"].as_str().unwrap().to_owned(),
    );

    // Without a sign-in the API says where to sign in; a callback nobody started is refused.
    let (code, body) = http(gw.admin, "GET", "/v1/session", None, None).await;
    assert_eq!(code, 401);
    assert!(body.contains("/approvals/sign-in"), "{body}");
    let (code, _) = http(
        gw.admin,
        "GET",
        "/approvals/callback?code=stolen&state=made-up",
        None,
        None,
    )
    .await;
    assert_eq!(code, 403);

    let base = format!("http://{admin}");
    let stale = "acme/reports@refs/heads/stale";
    let out = browser_script("sign_in.mjs", &[&base, &id, "alice", stale]).await;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The requester collects the token the signed-in approver approved.
    let (code, issued) = exchange(&gw, &workflow, &[("request_id", &handle)]).await;
    assert_eq!(code, 200, "{issued}");
    let records = audit_records_when(&gw.config.audit_path(), |all| {
        all.iter()
            .any(|r| r["type"] == "approval_decided" && r["id"] == id.as_str())
            && all.iter().any(|r| r["type"] == "revocation")
    })
    .await;
    let signed_in: Vec<_> = records
        .iter()
        .filter(|r| r["type"] == "approver_sign_in")
        .collect();
    assert_eq!(signed_in.len(), 2, "{signed_in:?}");
    assert_eq!(signed_in[0]["outcome"], "refused");
    assert_eq!(signed_in[1]["outcome"], "signed_in");
    assert_eq!(signed_in[1]["subject"], "alice");
    assert_eq!(signed_in[1]["groups"], json!(["dba", "sluice-admins"]));
    let revocation = records
        .iter()
        .find(|r| r["type"] == "revocation")
        .expect("the page's revocation is recorded");
    assert_eq!(revocation["value"], stale);
    assert_eq!(revocation["by"], "alice");
    let decided = records
        .iter()
        .find(|r| r["type"] == "approval_decided" && r["id"] == id.as_str())
        .unwrap();
    assert_eq!(decided["votes"][0]["approver"], "alice");
    assert_eq!(decided["votes"][0]["reason"], "signed in and approved");
}
