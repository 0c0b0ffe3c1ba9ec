//! The server leg: every Postgres authentication method and every TLS mode.

use sluice::config::UpstreamTlsMode;
use sluice_integration_tests::{GatewayOptions, Roles, TestGateway};

async fn upstream_identity(options: GatewayOptions) -> Result<(String, bool), String> {
    let gw = TestGateway::start_with(options).await;
    let client = gw.connect("agent", &gw.token("agent")).await.map_err(|e| {
        e.as_db_error()
            .map(|d| format!("{} {}", d.code().code(), d.message()))
            .unwrap_or_else(|| e.to_string())
    })?;
    let row = client
        .query_one(
            "SELECT current_user::text, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok((row.get(0), row.get(1)))
}

fn with_role(role: &'static str, tls: UpstreamTlsMode) -> GatewayOptions {
    GatewayOptions {
        upstream_role: role,
        upstream_tls: tls,
        ..Default::default()
    }
}

#[tokio::test]
async fn scram_sha_256_upstream_login() {
    let (user, _) = upstream_identity(with_role(Roles::SCRAM, UpstreamTlsMode::Disable))
        .await
        .unwrap();
    assert_eq!(user, Roles::SCRAM);
}

#[tokio::test]
async fn md5_upstream_login() {
    let (user, _) = upstream_identity(with_role(Roles::MD5, UpstreamTlsMode::Disable))
        .await
        .unwrap();
    assert_eq!(user, Roles::MD5);
}

#[tokio::test]
async fn cleartext_password_upstream_login() {
    let (user, _) = upstream_identity(with_role(Roles::CLEARTEXT, UpstreamTlsMode::Require))
        .await
        .unwrap();
    assert_eq!(user, Roles::CLEARTEXT);
}

#[tokio::test]
async fn trust_upstream_login() {
    let (user, _) = upstream_identity(with_role(Roles::TRUST, UpstreamTlsMode::Disable))
        .await
        .unwrap();
    assert_eq!(user, Roles::TRUST);
}

#[tokio::test]
async fn upstream_leg_is_encrypted_with_tls_require() {
    let (user, ssl) = upstream_identity(with_role(Roles::TLS_ONLY, UpstreamTlsMode::Require))
        .await
        .unwrap();
    assert_eq!(user, Roles::TLS_ONLY);
    assert!(ssl);
}

#[tokio::test]
async fn upstream_certificate_is_verified_with_verify_full() {
    let (_, ssl) = upstream_identity(with_role(Roles::TLS_ONLY, UpstreamTlsMode::VerifyFull))
        .await
        .unwrap();
    assert!(ssl);
}

#[tokio::test]
async fn verify_full_refuses_a_certificate_from_another_ca() {
    let gw_dir = tempfile::tempdir().unwrap();
    let other_ca = gw_dir.path().join("other-ca.crt");
    let generated = sluice::tls::generate_self_signed(&["127.0.0.1"]).unwrap();
    std::fs::write(&other_ca, generated.cert_pem).unwrap();
    let options = GatewayOptions {
        extra_upstream_toml: format!("ca_file = \"{}\"", other_ca.display()),
        ..with_role(Roles::TLS_ONLY, UpstreamTlsMode::VerifyFull)
    };
    let err = upstream_identity(options).await.unwrap_err();
    assert!(err.starts_with("08006"), "{err}");
}

#[tokio::test]
async fn upstream_refusing_cleartext_fails_the_login_without_leaking_the_password() {
    let err = upstream_identity(with_role(Roles::TLS_ONLY, UpstreamTlsMode::Disable))
        .await
        .unwrap_err();
    assert!(err.starts_with("08006"), "{err}");
    let password = &sluice_integration_tests::postgres().role_password;
    assert!(!err.contains(password.as_str()));
}
