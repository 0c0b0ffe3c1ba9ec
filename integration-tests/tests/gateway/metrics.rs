//! `GET /metrics` on the admin listener: Prometheus text that parses, with the counters the
//! gateway's work moved; health and readiness.

use std::collections::HashMap;

use sluice_integration_tests::{GatewayOptions, PluginSpec, TestGateway, http};

/// `name{labels}` → value, for every sample line; panics on a line that is not one.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line:?}"));
        let name_ok = series
            .split('{')
            .next()
            .is_some_and(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        assert!(name_ok, "bad metric name: {line:?}");
        samples.insert(series.to_owned(), value);
    }
    samples
}

#[tokio::test]
async fn metrics_count_sessions_statements_decisions_plugin_calls_and_audit_writes() {
    let gw = TestGateway::start_with(GatewayOptions {
        plugins: vec![
            PluginSpec::stock("no-ddl"),
            PluginSpec::stock("approve-writes"),
        ],
        ..GatewayOptions::default()
    })
    .await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    for _ in 0..3 {
        client.simple_query("SELECT 1").await.unwrap();
    }
    assert!(client.simple_query("DROP TABLE items").await.is_err());
    assert!(gw.connect("agent", "bogus").await.is_err());

    let (code, body) = http(gw.admin, "GET", "/metrics", None, None).await;
    assert_eq!(code, 200);
    let samples = parse(&body);
    let get = |series: &str| {
        *samples
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
    };
    assert_eq!(get("sluice_sessions_total"), 1.0);
    assert_eq!(get("sluice_sessions_open"), 1.0);
    assert_eq!(
        get(r#"sluice_statements_total{kind="select",decision="allow"}"#),
        3.0
    );
    assert_eq!(
        get(r#"sluice_statements_total{kind="ddl",decision="deny"}"#),
        1.0
    );
    assert!(get(r#"sluice_plugin_call_seconds_count{plugin="no-ddl"}"#) >= 1.0);
    assert!(get("sluice_audit_write_seconds_count") >= 4.0);
    assert_eq!(get("sluice_audit_write_failures_total"), 0.0);
    assert_eq!(get("sluice_approvals_pending"), 0.0);
    assert!(get("sluice_plugin_reloads_total") >= 1.0);
    assert_eq!(
        get(r#"sluice_login_failures_total{reason="malformed"}"#),
        1.0
    );

    assert_eq!(http(gw.admin, "GET", "/health", None, None).await.0, 200);
    assert_eq!(http(gw.admin, "GET", "/ready", None, None).await.0, 200);
}

#[tokio::test]
async fn readiness_fails_while_the_audit_log_cannot_be_written() {
    let gw = TestGateway::start_with(GatewayOptions {
        extra_toml: "[audit]\npath = \"/dev/full\"\n".into(),
        ..GatewayOptions::default()
    })
    .await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    assert!(client.simple_query("SELECT 1").await.is_err());
    let (code, body) = http(gw.admin, "GET", "/ready", None, None).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("audit"), "{body}");
    let (_, metrics) = http(gw.admin, "GET", "/metrics", None, None).await;
    assert!(parse(&metrics)["sluice_audit_write_failures_total"] >= 1.0);
}
