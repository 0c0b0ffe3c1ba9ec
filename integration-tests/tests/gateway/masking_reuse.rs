//! Plan reuse (`masking-reuse`, contract 0.1.3): a masking plugin that says its plans depend on
//! the columns alone is asked once per set of columns in a session, and its remembered plans
//! still mask; a plugin that says nothing is asked for every result set.

use std::collections::HashMap;

use sluice_integration_tests::{GatewayOptions, PluginSpec, TestGateway, as_superuser, http};

const RULES: &str = r#"
[config]
rules = "reuse_people.email=hash, reuse_people.card=partial(0,4)"
"#;

async fn fixtures() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        as_superuser(
            "CREATE TABLE reuse_people (id int PRIMARY KEY, email text, card text);
                 INSERT INTO reuse_people VALUES (1, 'ann@example.com', '4242424242424242');
                 GRANT ALL ON reuse_people TO PUBLIC;",
        )
        .await;
    })
    .await;
}

/// How many calls (plans and transforms) each masking plugin has served, from `/metrics`.
async fn calls(gw: &TestGateway) -> HashMap<String, u64> {
    let (code, body) = http(gw.admin, "GET", "/metrics", None, None).await;
    assert_eq!(code, 200);
    body.lines()
        .filter_map(|line| line.strip_prefix("sluice_plugin_call_seconds_count{plugin=\""))
        .filter_map(|rest| rest.split_once("\"} "))
        .map(|(plugin, n)| (plugin.to_owned(), n.parse().expect("a count")))
        .collect()
}

async fn values(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    client
        .simple_query(sql)
        .await
        .expect(sql)
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).unwrap_or("NULL").to_owned()))
            }
            _ => None,
        })
        .flatten()
        .collect()
}

#[tokio::test]
async fn a_same_columns_plugin_is_asked_once_per_set_of_columns_and_its_plans_still_mask() {
    fixtures().await;
    let gw = TestGateway::start_with(GatewayOptions {
        plugins: vec![
            PluginSpec::with("mask-pii-columns", "mask-pii-columns", RULES),
            // Says nothing about reuse (the SDK's default): asked for every result set.
            PluginSpec::stock("pii-scan"),
        ],
        ..GatewayOptions::default()
    })
    .await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let before = calls(&gw).await;
    let asked = |now: &HashMap<String, u64>, plugin: &str| {
        now.get(plugin).copied().unwrap_or(0) - before.get(plugin).copied().unwrap_or(0)
    };

    for _ in 0..3 {
        let row = values(&client, "SELECT id, email FROM reuse_people WHERE id = 1").await;
        assert_eq!(row[0], "1");
        assert!(
            row[1].starts_with("h:") && row[1].len() == 34,
            "hashed every time, by a remembered plan too: {row:?}"
        );
    }
    let now = calls(&gw).await;
    assert_eq!(
        asked(&now, "mask-pii-columns"),
        1,
        "one plan for three results"
    );
    assert!(
        asked(&now, "pii-scan") >= 3,
        "pii-scan planned every result: {now:?}"
    );

    // Other columns: a plan of their own, with their own masks.
    let row = values(&client, "SELECT id, card FROM reuse_people WHERE id = 1").await;
    assert_eq!(row[1], "************4242");
    assert_eq!(asked(&calls(&gw).await, "mask-pii-columns"), 2);
    // Back to the first columns: remembered.
    let row = values(&client, "SELECT id, email FROM reuse_people").await;
    assert!(row[1].starts_with("h:"), "{row:?}");
    assert_eq!(asked(&calls(&gw).await, "mask-pii-columns"), 2);

    // Plans are remembered per session: another session asks again.
    let other = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let row = values(&other, "SELECT id, email FROM reuse_people WHERE id = 1").await;
    assert!(row[1].starts_with("h:"), "{row:?}");
    assert_eq!(asked(&calls(&gw).await, "mask-pii-columns"), 3);
}
