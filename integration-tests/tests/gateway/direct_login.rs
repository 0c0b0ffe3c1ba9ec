//! A trusted issuer's own token as the psql password, where the issuer allows it
//! (`direct_login`): verified and decided as an exchange would be, refused where the issuer
//! wants tokens exchanged first, and revocable like any other.

use std::time::Duration;

use serde_json::json;
use sluice_integration_tests::idp::{TestIdp, TestKey};
use sluice_integration_tests::{
    GatewayOptions, PluginSpec, TestGateway, closed_after, error_message, jwt_claims,
};

use super::token_exchange::{AUD, github_claims, issuer_toml};

#[tokio::test]
async fn an_issuer_that_allows_it_logs_in_with_its_own_token_and_one_that_does_not_is_told_to_exchange()
 {
    let (person_key, gh_key) = (TestKey::es256("people-1"), TestKey::rs256("gh-1"));
    let people = TestIdp::start("people", vec![person_key.clone()]).await;
    let github = TestIdp::start("github", vec![gh_key.clone()]).await;
    let gw = TestGateway::start_with(GatewayOptions {
        extra_toml: [
            issuer_toml(
                "people",
                &people,
                "oidc",
                "subjects = [\"dana\", \"erin\"]\ndatabases = [\"app\"]\ndirect_login = true",
            ),
            issuer_toml(
                "github",
                &github,
                "github-actions",
                "subjects = [\"*\"]\ndatabases = [\"app\"]",
            ),
        ]
        .concat(),
        ..GatewayOptions::default()
    })
    .await;
    let dana = person_key.sign(&people.claims(AUD, 300, json!({"sub": "dana"})));
    let client = gw.connect("dana", &dana).await.unwrap();
    let row = client.query_one("SELECT 6 * 7", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    let start = gw.audit_record("session_start").await;
    assert_eq!(start["subject"], "dana");
    assert_eq!(start["idp"], people.issuer.as_str());

    // Someone else's name, a principal the issuer does not list, an expired token: refused.
    let err = gw.connect("erin", &dana).await.unwrap_err();
    assert!(error_message(&err).contains("password authentication failed"));
    let frank = person_key.sign(&people.claims(AUD, 300, json!({"sub": "frank"})));
    let err = gw.connect("frank", &frank).await.unwrap_err();
    assert!(
        error_message(&err).contains("does not let it use"),
        "{}",
        error_message(&err)
    );
    let stale = person_key.sign(&people.claims(AUD, -120, json!({"sub": "dana"})));
    assert!(gw.connect("dana", &stale).await.is_err());
    // A validly signed token whose `exp` no clock reaches: refused as a bad password, not a
    // dropped connection, and the sessions already open go on.
    let mut forever = people.claims(AUD, 300, json!({"sub": "dana"}));
    forever["exp"] = json!(u64::MAX);
    let err = gw
        .connect("dana", &person_key.sign(&forever))
        .await
        .unwrap_err();
    assert!(
        error_message(&err).contains("password authentication failed"),
        "{}",
        error_message(&err)
    );
    let row = client.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);

    // GitHub's tokens are exchanged first here: the refusal says so.
    let workflow = gh_key.sign(&github_claims(&github, "acme/reports", "refs/heads/main"));
    let err = gw
        .connect("acme/reports@refs/heads/main", &workflow)
        .await
        .unwrap_err();
    assert!(
        error_message(&err).contains("exchanged first"),
        "{}",
        error_message(&err)
    );

    // Revoking the person's token by its own id ends the session at once.
    let jti = jwt_claims(&dana)["jti"].clone();
    let revoked_at = gw
        .revoke(json!({"jti": jti, "reason": "lost laptop"}))
        .await;
    assert!(closed_after(&client, revoked_at).await < Duration::from_secs(1));
    assert!(gw.connect("dana", &dana).await.is_err());
}

#[tokio::test]
async fn a_direct_login_that_an_access_plugin_holds_for_people_is_refused() {
    let key = TestKey::es256("people-1");
    let people = TestIdp::start("people", vec![key.clone()]).await;
    let rules = "issuer=people principal=dana db=app -> issue ttl=1m\nissuer=people db=app -> ask approvers=dba";
    let gw = TestGateway::start_with(GatewayOptions {
        extra_toml: issuer_toml(
            "people",
            &people,
            "oidc",
            "subjects = [\"*\"]\ndatabases = [\"app\"]\ndirect_login = true",
        ),
        plugins: vec![PluginSpec::with(
            "access-rules",
            "access-rules",
            &format!("[config]\nrules = '''\n{rules}\n'''\n"),
        )],
        ..GatewayOptions::default()
    })
    .await;
    let dana = key.sign(&people.claims(AUD, 300, json!({"sub": "dana"})));
    gw.connect("dana", &dana).await.unwrap();
    let erin = key.sign(&people.claims(AUD, 300, json!({"sub": "erin"})));
    let err = gw.connect("erin", &erin).await.unwrap_err();
    assert!(
        error_message(&err).contains("needs approval"),
        "{}",
        error_message(&err)
    );
}
