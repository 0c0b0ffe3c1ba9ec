//! Approval plugins route held statements: to which approver groups, how many approvals, for
//! how long and with what notification, or decide them without a human. Tested with the stock
//! `route-by-table` component behind the stock `approve-writes` policy.

use sluice_integration_tests::{
    GatewayOptions, PluginSpec, RawClient, TestGateway, http, query_message, tags,
};

async fn gateway(rules: &str) -> TestGateway {
    TestGateway::start_with(GatewayOptions {
        plugins: vec![
            PluginSpec::stock("approve-writes"),
            PluginSpec::with(
                "route-by-table",
                "route-by-table",
                &format!("[config]\nrules = \"\"\"\n{rules}\n\"\"\"\n"),
            ),
        ],
        extra_toml: "[approvals]\ntimeout = \"20s\"\n".into(),
        ..GatewayOptions::default()
    })
    .await
}

fn request_id(text: &str) -> String {
    text.split_whitespace()
        .find(|w| w.starts_with("apr-"))
        .unwrap_or_else(|| panic!("no request id in {text:?}"))
        .to_owned()
}

/// Sends `sql`; expects the "approval required" notice and returns it.
async fn held(raw: &mut RawClient, sql: &str) -> String {
    raw.send(&query_message(sql)).await;
    let notice = raw.recv().await.expect("a notice");
    assert_eq!(notice.tag, b'N', "the notice comes first");
    notice.message()
}

async fn view(gw: &TestGateway, id: &str) -> serde_json::Value {
    view_as(gw, id, "auditor").await
}

async fn view_as(gw: &TestGateway, id: &str, subject: &str) -> serde_json::Value {
    gw.approval(id, subject, &["approvers", "dba"]).await
}

async fn vote(gw: &TestGateway, id: &str, approver: &str, groups: &[&str]) -> u16 {
    let token = gw.token_with_groups(approver, groups);
    let path = format!("/v1/approvals/{id}/approve");
    http(gw.admin, "POST", &path, Some(&token), Some("{}"))
        .await
        .0
}

async fn invoices(gw: &TestGateway) -> i64 {
    let client = gw.connect("reader", &gw.token("reader")).await.unwrap();
    client
        .query_one("SELECT count(*) FROM billing.invoices", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn writes_to_billing_tables_need_two_approvers_from_dba_as_the_plugin_routes_them() {
    let gw = gateway("billing.* -> ask groups=dba approvals=2 timeout=45s").await;
    let (_, plugins) = http(gw.admin, "GET", "/v1/plugins", None, None).await;
    assert!(plugins.contains(r#""kind":"approval""#), "{plugins}");
    assert!(plugins.contains(r#""kind":"policy""#), "{plugins}");

    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let notice = held(&mut raw, "INSERT INTO billing.invoices VALUES (1, 100)").await;
    assert!(
        notice.contains("waiting up to 45s"),
        "the plugin's timeout: {notice}"
    );
    let id = request_id(&notice);
    let request = view(&gw, &id).await;
    assert_eq!(request["approver_groups"], serde_json::json!(["dba"]));
    assert_eq!(request["approvals_needed"], 2);
    assert_eq!(request["routed_by"], "route-by-table");
    let note = request["note"].as_str().unwrap();
    assert!(
        note.contains("billing.invoices") && note.contains("2 of dba"),
        "{note}"
    );

    // Approvers see the requests routed to their groups only.
    let listed = |groups: &'static [&'static str]| {
        let token = gw.token_with_groups("carol", groups);
        async move {
            http(gw.admin, "GET", "/v1/approvals", Some(&token), None)
                .await
                .1
        }
    };
    assert!(listed(&["dba"]).await.contains(&id));
    assert!(!listed(&["approvers"]).await.contains(&id));

    // The default route's group no longer decides it; two distinct dbas do.
    assert_eq!(vote(&gw, &id, "alice", &["approvers"]).await, 403);
    assert_eq!(vote(&gw, &id, "alice", &["dba"]).await, 200);
    assert_eq!(view(&gw, &id).await["status"], "pending");
    assert_eq!(invoices(&gw).await, 0);
    assert_eq!(vote(&gw, &id, "bob", &["dba"]).await, 200);
    let reply = raw.until_ready().await;
    assert_eq!(tags(&reply), "CZ");
    assert_eq!(invoices(&gw).await, 1);

    // A write elsewhere matches no rule: the [approvals] default route, untouched by the plugin.
    let notice = held(&mut raw, "INSERT INTO items VALUES (7000, 'x')").await;
    let request = view(&gw, &request_id(&notice)).await;
    assert_eq!(request["approver_groups"], serde_json::json!(["approvers"]));
    assert_eq!(request["approvals_needed"], 1);
    assert!(request["routed_by"].is_null());
    assert!(notice.contains("waiting up to 20s"), "{notice}");
}

#[tokio::test]
async fn a_plugin_approves_or_denies_without_a_human_and_only_for_tables_it_names() {
    let gw = gateway(
        "public.items -> deny items are written by the app only\n\
         billing.* -> ask groups=dba\n\
         scratch.* -> approve scratch tables are disposable",
    )
    .await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;

    // Every table it touches is covered by `approve`: it runs at once, with a notice naming
    // the request, recorded as the plugin's vote.
    let reply = raw
        .exchange(&query_message(
            "INSERT INTO scratch.notes VALUES (1, 'fine')",
        ))
        .await;
    assert_eq!(tags(&reply), "NCZ");
    let notice = reply[0].message();
    assert!(
        notice.contains("granted by plugin:route-by-table"),
        "{notice}"
    );
    // Nobody approves a request no human was asked about; its requester can look it up.
    let request = view_as(&gw, &request_id(&notice), "agent").await;
    assert_eq!(request["status"], "approved");
    assert_eq!(request["approver_groups"], serde_json::json!([]));
    assert_eq!(request["votes"][0]["approver"], "plugin:route-by-table");

    // A denied table anywhere in the statement denies it, with 42501 and the plugin's reason.
    let reply = raw
        .exchange(&query_message(
            "INSERT INTO scratch.notes SELECT id, name FROM items",
        ))
        .await;
    assert_eq!(tags(&reply), "EZ");
    assert_eq!(reply[0].sqlstate(), "42501");
    let text = reply[0].message();
    assert!(
        text.contains("denied by plugin:route-by-table: items: items are written by the app only"),
        "{text}"
    );

    // `approve` never covers a table it does not name: reading billing sends it to the dbas,
    // reading an unnamed table to the default route.
    let notice = held(
        &mut raw,
        "INSERT INTO scratch.notes SELECT id, 'x' FROM billing.invoices",
    )
    .await;
    assert_eq!(
        view(&gw, &request_id(&notice)).await["approver_groups"],
        serde_json::json!(["dba"])
    );
    raw.cancel(&gw).await;
    assert_eq!(tags(&raw.until_ready().await), "EZ");
    let notice = held(
        &mut raw,
        "INSERT INTO scratch.notes SELECT 2, relname::text FROM pg_class LIMIT 1",
    )
    .await;
    let request = view(&gw, &request_id(&notice)).await;
    assert_eq!(request["approver_groups"], serde_json::json!(["approvers"]));
    assert!(request["routed_by"].is_null());
}

#[tokio::test]
async fn a_routing_plugin_that_fails_refuses_the_held_statement_and_the_session_goes_on() {
    // `ask` without groups: the plugin reports its config unusable.
    let gw = gateway("billing.* -> ask approvals=2").await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let reply = raw
        .exchange(&query_message("INSERT INTO billing.invoices VALUES (2, 1)"))
        .await;
    assert_eq!(tags(&reply), "EZ", "refused at once, never held");
    assert_eq!(reply[0].sqlstate(), "42501");
    let text = reply[0].message();
    assert!(
        text.contains("approval plugin \"route-by-table\" failed"),
        "{text}"
    );
    assert!(text.contains("invalid config"), "{text}");
    assert!(text.contains("needs groups"), "{text}");
    assert_eq!(invoices(&gw).await, 0);
    assert_eq!(
        tags(&raw.exchange(&query_message("SELECT 1")).await),
        "TDCZ"
    );
    let token = gw.token_with_groups("auditor", &["approvers"]);
    let (_, pending) = http(gw.admin, "GET", "/v1/approvals", Some(&token), None).await;
    assert_eq!(pending.trim(), "[]", "no request was opened");
}

#[tokio::test]
async fn an_approval_plugin_that_traps_spins_hogs_memory_or_routes_to_nobody_refuses_and_the_gateway_goes_on()
 {
    for (mode, expect) in [
        ("trap", "trapped"),
        ("loop", "timed out"),
        ("alloc", "trapped"),
        ("nobody", "no approver group"),
    ] {
        let gw = TestGateway::start_with(GatewayOptions {
            plugins: vec![
                PluginSpec::stock("approve-writes"),
                PluginSpec::with(
                    "faulty-router",
                    "test-route-faults",
                    &format!("[config]\nmode = \"{mode}\"\n[limits]\nmemory_mib = 16\n"),
                ),
            ],
            ..GatewayOptions::default()
        })
        .await;
        let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
        let started = std::time::Instant::now();
        let reply = raw
            .exchange(&query_message("INSERT INTO items VALUES (7100, 'x')"))
            .await;
        assert_eq!(tags(&reply), "EZ", "{mode}: refused, never held");
        assert_eq!(reply[0].sqlstate(), "42501", "{mode}");
        let text = reply[0].message();
        assert!(
            text.contains("approval plugin \"faulty-router\" failed"),
            "{mode}: {text}"
        );
        assert!(text.contains(expect), "{mode}: {text}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{mode}"
        );
        // The session, and reads that need no approval, go on.
        assert_eq!(
            tags(&raw.exchange(&query_message("SELECT 1")).await),
            "TDCZ",
            "{mode}"
        );
    }
}
