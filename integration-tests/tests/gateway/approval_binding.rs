//! An approval covers exactly what the approvers saw, once: every execution of a held statement
//! needs its own decision whichever protocol path reaches it, approvers see the statement and
//! the values that run, a scope covers the shape they saw and no other, the plugins serving when
//! it runs decide again, and what came before a held statement does not wait for it.

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use sluice_integration_tests::{
    GatewayOptions, PluginSpec, RawClient, TestGateway, bind_and_execute,
    bind_statement_and_execute, http, query_message, tags,
};

async fn gateway() -> TestGateway {
    TestGateway::start_with(GatewayOptions {
        plugins: vec![PluginSpec::stock("approve-writes")],
        extra_toml: "[approvals]\ntimeout = \"30s\"\n".into(),
        ..GatewayOptions::default()
    })
    .await
}

/// Reads the approval notice of a statement already sent; returns the request id.
async fn notice_id(raw: &mut RawClient) -> String {
    loop {
        let message = raw.recv().await.expect("a notice");
        if message.tag != b'N' || !message.message().contains("required (") {
            continue;
        }
        return message
            .message()
            .split_whitespace()
            .find(|w| w.starts_with("apr-"))
            .expect("the notice names the request")
            .to_owned();
    }
}

async fn vote(gw: &TestGateway, id: &str, verb: &str, body: &str) {
    let token = gw.token_with_groups("alice", &["approvers"]);
    let (code, answer) = http(
        gw.admin,
        "POST",
        &format!("/v1/approvals/{id}/{verb}"),
        Some(&token),
        Some(body),
    )
    .await;
    assert_eq!(code, 200, "{answer}");
}

async fn view(gw: &TestGateway, id: &str) -> serde_json::Value {
    gw.approval(id, "auditor", &["approvers"]).await
}

async fn rows(gw: &TestGateway, condition: &str) -> i64 {
    let client = gw.connect("reader", &gw.token("reader")).await.unwrap();
    client
        .query_one(
            &format!("SELECT count(*) FROM items WHERE {condition}"),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn an_approved_unnamed_statement_does_not_run_again_on_a_bare_bind() {
    let gw = gateway().await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let mut out = BytesMut::new();
    frontend::parse(
        "",
        "INSERT INTO items VALUES ($1::int, 'once')",
        [],
        &mut out,
    )
    .unwrap();
    bind_and_execute(&mut out, &["7001"]);
    frontend::sync(&mut out);
    raw.send(&out).await;
    let first = notice_id(&mut raw).await;
    vote(&gw, &first, "approve", "").await;
    assert_eq!(tags(&raw.until_ready().await), "12CZ");

    // Postgres still holds the unnamed statement: a Bind of it alone is a new execution.
    for value in ["7001", "7002"] {
        let mut out = BytesMut::new();
        bind_and_execute(&mut out, &[value]);
        frontend::sync(&mut out);
        raw.send(&out).await;
        let again = notice_id(&mut raw).await;
        assert_ne!(again, first, "a new request for each execution");
        let shown = view(&gw, &again).await;
        assert!(
            shown["statement"]
                .as_str()
                .unwrap()
                .contains("INSERT INTO items"),
            "{shown}"
        );
        assert_eq!(shown["parameters"][0], value, "{shown}");
        vote(&gw, &again, "deny", "").await;
        assert_eq!(tags(&raw.until_ready().await), "EZ");
    }
    assert_eq!(
        rows(&gw, "id IN (7001, 7002)").await,
        1,
        "only the approved run"
    );

    // Prepared and described first (a driver learning the types): preparing runs nothing and
    // is not held; the execution is, once, with its values.
    let mut out = BytesMut::new();
    frontend::parse(
        "",
        "INSERT INTO items VALUES ($1::int, 'later')",
        [],
        &mut out,
    )
    .unwrap();
    frontend::describe(b'S', "", &mut out).unwrap();
    frontend::sync(&mut out);
    assert_eq!(tags(&raw.exchange(&out).await), "1tnZ");
    let mut out = BytesMut::new();
    bind_and_execute(&mut out, &["7003"]);
    frontend::sync(&mut out);
    raw.send(&out).await;
    let id = notice_id(&mut raw).await;
    assert_eq!(view(&gw, &id).await["parameters"][0], "7003");
    vote(&gw, &id, "approve", "").await;
    assert_eq!(tags(&raw.until_ready().await), "2CZ");
    assert_eq!(rows(&gw, "id = 7003").await, 1);
}

#[tokio::test]
async fn a_named_statement_replaced_by_sql_is_shown_as_what_then_runs() {
    let gw = gateway().await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let mut out = BytesMut::new();
    frontend::parse("w", "INSERT INTO items VALUES ($1::int, 'w')", [], &mut out).unwrap();
    frontend::sync(&mut out);
    assert_eq!(tags(&raw.exchange(&out).await), "1Z");
    // Replaced by SQL, not by a protocol Close; then bound in the same write.
    let mut out = query_message("DEALLOCATE w");
    frontend::parse(
        "w",
        "DELETE FROM items WHERE id = $1::int AND name = 'w'",
        [],
        &mut out,
    )
    .unwrap();
    bind_statement_and_execute(&mut out, "w", &["7010"]);
    frontend::sync(&mut out);
    raw.send(&out).await;
    let id = notice_id(&mut raw).await;
    let shown = view(&gw, &id).await;
    let statement = shown["statement"].as_str().unwrap();
    assert!(
        statement.contains("DELETE FROM items WHERE id = $1::int"),
        "approvers see the statement that runs: {statement}"
    );
    vote(&gw, &id, "deny", "").await;
    // The DEALLOCATE's cycle, then the refused Bind's (the notice may come before either).
    let answer = tags(&raw.until_ready().await) + &tags(&raw.until_ready().await);
    let answer: String = answer.chars().filter(|t| *t != 'N').collect();
    assert_eq!(answer, "CZ1EZ");

    // Once the DEALLOCATE is answered, only the new definition is left to show.
    let mut out = BytesMut::new();
    bind_statement_and_execute(&mut out, "w", &["7010"]);
    frontend::sync(&mut out);
    raw.send(&out).await;
    let id = notice_id(&mut raw).await;
    let statement = view(&gw, &id).await["statement"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        statement.contains("DELETE") && !statement.contains("INSERT"),
        "{statement}"
    );
    vote(&gw, &id, "deny", "").await;
    assert_eq!(tags(&raw.until_ready().await), "EZ");
}

#[tokio::test]
async fn values_bound_in_binary_are_shown_to_approvers_as_hex_not_null() {
    let gw = gateway().await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let mut out = BytesMut::new();
    frontend::parse(
        "",
        "INSERT INTO items VALUES ($1, 'binary')",
        [23],
        &mut out,
    )
    .unwrap();
    frontend::bind(
        "",
        "",
        [1i16],
        [7020i32.to_be_bytes()],
        |value: [u8; 4], buf: &mut BytesMut| {
            buf.extend_from_slice(&value);
            Ok::<_, Box<dyn std::error::Error + Sync + Send>>(postgres_protocol::IsNull::No)
        },
        Some(0i16),
        &mut out,
    )
    .map_err(|_| ())
    .unwrap();
    frontend::execute("", 0, &mut out).unwrap();
    frontend::sync(&mut out);
    raw.send(&out).await;
    let id = notice_id(&mut raw).await;
    let shown = view(&gw, &id).await;
    assert_eq!(shown["parameters"][0], "\\x00001b6c", "{shown}");
    assert_eq!(shown["display"]["parameters"][0], "$1='\\x00001b6c'");
    vote(&gw, &id, "deny", "").await;
    assert_eq!(tags(&raw.until_ready().await), "EZ");
}

#[tokio::test]
async fn a_scope_covers_the_shape_approvers_saw_and_not_an_in_list() {
    let gw = gateway().await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    for id in 7030..7036 {
        // Seeding is a write too: approved one by one.
        raw.send(&query_message(&format!(
            "INSERT INTO items VALUES ({id}, 'scoped')"
        )))
        .await;
        let request = notice_id(&mut raw).await;
        vote(&gw, &request, "approve", "").await;
        assert_eq!(tags(&raw.until_ready().await), "CZ");
    }
    raw.send(&query_message("DELETE FROM items WHERE id = 7030"))
        .await;
    let id = notice_id(&mut raw).await;
    let shown = view(&gw, &id).await;
    assert_eq!(
        shown["display"]["scope"], "DELETE FROM items WHERE id = <value>",
        "approvers are shown what a scope would cover"
    );
    vote(&gw, &id, "approve", r#"{"scope_seconds":600}"#).await;
    assert_eq!(tags(&raw.until_ready().await), "CZ");

    // The same shape with another value runs under the grant...
    let reply = raw
        .exchange(&query_message("DELETE FROM items WHERE id = 7031"))
        .await;
    assert!(tags(&reply).ends_with("CZ"), "{}", tags(&reply));
    // ...but not an IN list, which pg_query's fingerprint would fold into the same shape,
    // nor a condition made always true.
    for other in [
        "DELETE FROM items WHERE id IN (7032, 7033, 7034)",
        "DELETE FROM items WHERE id = 7032 OR true",
    ] {
        raw.send(&query_message(other)).await;
        let held = notice_id(&mut raw).await;
        vote(&gw, &held, "deny", "").await;
        assert_eq!(tags(&raw.until_ready().await), "EZ", "{other}");
    }
    assert_eq!(rows(&gw, "id BETWEEN 7030 AND 7035").await, 4);
}

#[tokio::test]
async fn a_deny_plugin_loaded_while_a_statement_waits_decides_before_it_runs() {
    let gw = gateway().await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    raw.send(&query_message("INSERT INTO items VALUES (7040, 'late')"))
        .await;
    let id = notice_id(&mut raw).await;
    // While it waits, the security team makes the agent read-only.
    PluginSpec::with("read-only", "read-only", "[config]\ngroups = \"*\"\n")
        .install(&gw.plugin_dir());
    gw.reload_plugins().await;
    vote(&gw, &id, "approve", "").await;
    let answer = raw.until_ready().await;
    assert_eq!(tags(&answer), "EZ");
    let error = answer.iter().find(|m| m.tag == b'E').unwrap();
    assert_eq!(error.sqlstate(), "42501");
    assert!(
        error.message().contains("read-only") && error.message().contains("changed while"),
        "{}",
        error.message()
    );
    assert_eq!(rows(&gw, "id = 7040").await, 0);
}

#[tokio::test]
async fn statements_sent_before_a_held_one_run_without_waiting_for_its_decision() {
    let gw = gateway().await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let mut out = query_message("SELECT 'ahead'");
    out.extend_from_slice(&query_message("INSERT INTO items VALUES (7050, 'held')"));
    raw.send(&out).await;
    // The first statement's whole answer arrives before anyone decides the second.
    let mut seen = String::new();
    let mut noticed = false;
    while !(seen.contains('Z') && noticed) {
        let message = raw.recv().await.expect("answers keep coming");
        noticed |= message.tag == b'N' && message.message().contains("required (");
        if message.tag != b'N' {
            seen.push(message.tag as char);
        }
    }
    assert_eq!(seen, "TDCZ");
    let id = raw_pending_id(&gw).await;
    vote(&gw, &id, "deny", "").await;
    assert_eq!(tags(&raw.until_ready().await), "EZ");
}

/// The one request pending for the agent.
async fn raw_pending_id(gw: &TestGateway) -> String {
    let token = gw.token_with_groups("alice", &["approvers"]);
    let (_, body) = http(gw.admin, "GET", "/v1/approvals", Some(&token), None).await;
    let pending: serde_json::Value = serde_json::from_str(&body).unwrap();
    pending
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["subject"] == "agent")
        .expect("a pending request")["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn what_approvers_read_shows_hidden_characters_escaped() {
    let gw = gateway().await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    // A bidirectional override makes the comment read as if the statement ended elsewhere;
    // an ANSI sequence would clear the approver's terminal line.
    let sql = "INSERT INTO items VALUES (7060, 'x') -- \u{202E}tceles\u{1b}[2K";
    raw.send(&query_message(sql)).await;
    let id = notice_id(&mut raw).await;
    let shown = view(&gw, &id).await;
    assert_eq!(shown["statement"], sql, "the exact text stays for tools");
    let display = shown["display"]["statement"].as_str().unwrap();
    assert!(
        display.contains("\\u{202E}tceles\\u{001B}[2K") && !display.contains('\u{1b}'),
        "{display}"
    );
    // The CLI prints only the escaped text.
    let token = gw.token_with_groups("alice", &["approvers"]);
    let output = tokio::process::Command::new(sluice_integration_tests::sluice_binary())
        .args([
            "approvals",
            "--server",
            &format!("http://{}", gw.admin),
            "--token",
            &token,
            "show",
            &id,
        ])
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}");
    assert!(
        !printed.contains('\u{1b}') && !printed.contains('\u{202E}'),
        "{printed}"
    );
    assert!(printed.contains("\\u{202E}"), "{printed}");
    vote(&gw, &id, "deny", "").await;
    assert_eq!(tags(&raw.until_ready().await), "EZ");
}

#[tokio::test]
async fn an_unnamed_statement_postgres_kept_after_an_error_is_not_run_unjudged() {
    let gw = gateway().await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    // Prepared, not run: no hold yet; every Bind of it will be.
    let mut out = BytesMut::new();
    frontend::parse("", "INSERT INTO items VALUES (7080, 'kept')", [], &mut out).unwrap();
    frontend::sync(&mut out);
    assert_eq!(tags(&raw.exchange(&out).await), "1Z");
    // Postgres fails at the Describe and skips the Parse: it keeps the INSERT, though the
    // gateway forwarded another definition.
    let mut out = BytesMut::new();
    frontend::describe(b'S', "nope", &mut out).unwrap();
    frontend::parse("", "SELECT 1", [], &mut out).unwrap();
    frontend::sync(&mut out);
    assert_eq!(tags(&raw.exchange(&out).await), "EZ");
    // A bare Bind: which statement it runs is not known, so it does not run.
    let mut out = BytesMut::new();
    bind_and_execute(&mut out, &[]);
    frontend::sync(&mut out);
    let answer = raw.exchange(&out).await;
    assert_eq!(tags(&answer), "EZ");
    let error = answer.iter().find(|m| m.tag == b'E').unwrap();
    assert_eq!(error.sqlstate(), "42501");
    assert!(
        error.message().contains("Parse it again"),
        "{}",
        error.message()
    );
    assert_eq!(rows(&gw, "id = 7080").await, 0);
    // A clean Parse settles it.
    let mut out = BytesMut::new();
    frontend::parse("", "SELECT 2", [], &mut out).unwrap();
    frontend::sync(&mut out);
    assert_eq!(tags(&raw.exchange(&out).await), "1Z");
    let mut out = BytesMut::new();
    bind_and_execute(&mut out, &[]);
    frontend::sync(&mut out);
    assert_eq!(tags(&raw.exchange(&out).await), "2DCZ");
}

#[tokio::test]
async fn a_query_sent_before_sync_ends_the_session_instead_of_shifting_its_cycles() {
    let gw = gateway().await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let mut out = BytesMut::new();
    frontend::parse("s", "INSERT INTO items VALUES (7090, 'x')", [], &mut out).unwrap();
    frontend::sync(&mut out);
    assert_eq!(tags(&raw.exchange(&out).await), "1Z");
    // Postgres would ignore the Query (it skips to Sync after the Describe fails), while a
    // gateway counting it would apply the Close a cycle early.
    let mut out = BytesMut::new();
    frontend::describe(b'S', "nope", &mut out).unwrap();
    out.extend_from_slice(&query_message("SELECT 1"));
    frontend::close(b'S', "s", &mut out).unwrap();
    frontend::sync(&mut out);
    raw.send(&out).await;
    let mut answer = Vec::new();
    while let Some(message) = raw.recv().await {
        answer.push(message);
    }
    let fatal = answer
        .iter()
        .find(|m| m.tag == b'E' && m.sqlstate() == "08P01")
        .unwrap_or_else(|| panic!("a FATAL protocol violation: {}", tags(&answer)));
    assert!(
        fatal.message().contains("before Sync"),
        "{}",
        fatal.message()
    );
}

#[tokio::test]
async fn a_refusal_after_a_driver_copy_still_reaches_the_client_as_the_gateways() {
    // tokio-postgres sends Bind, Execute and Sync before COPY data: Postgres ignores that
    // Sync, and so must the gateway's numbering of request cycles, or every later refusal
    // would be matched to the wrong answer.
    let gw = TestGateway::start_with(GatewayOptions {
        plugins: vec![PluginSpec::stock("no-ddl")],
        ..GatewayOptions::default()
    })
    .await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    for round in 0..3 {
        let sink = client
            .copy_in("COPY scratch.notes (id, body) FROM STDIN")
            .await
            .unwrap();
        futures_util::pin_mut!(sink);
        use futures_util::SinkExt;
        sink.send(bytes::Bytes::from(format!("{}\tcopied\n", 7100 + round)))
            .await
            .unwrap();
        assert_eq!(sink.finish().await.unwrap(), 1);
        let e = client
            .simple_query("CREATE TABLE scratch.not_allowed (id int)")
            .await
            .unwrap_err();
        assert!(
            e.as_db_error()
                .is_some_and(|d| d.message().contains("refused by policy \"no-ddl\"")),
            "round {round}: {e:?}"
        );
        assert_eq!(
            client
                .query_one("SELECT 1", &[])
                .await
                .unwrap()
                .get::<_, i32>(0),
            1
        );
    }
}

#[tokio::test]
async fn a_scope_covers_only_sessions_that_changed_search_path_and_role_alike() {
    let gw = gateway().await;
    // A second `items` in another schema: what the name means depends on search_path.
    let admin = sluice_integration_tests::postgres()
        .server
        .superuser_client(sluice_integration_tests::DATABASE)
        .await
        .unwrap();
    admin
        .batch_execute(
            "CREATE TABLE scratch.items (id int PRIMARY KEY, name text NOT NULL);
             GRANT ALL ON scratch.items TO PUBLIC;
             INSERT INTO scratch.items VALUES (7060, 'shadow'), (7061, 'shadow');
             INSERT INTO items VALUES (7060, 'x'), (7061, 'x'), (7062, 'x'), (7063, 'x');
             CREATE FUNCTION scratch.one() RETURNS int LANGUAGE sql STABLE AS 'SELECT 1';
             GRANT EXECUTE ON FUNCTION scratch.one() TO PUBLIC;",
        )
        .await
        .unwrap();
    let shadow = || async {
        admin
            .query_one("SELECT count(*) FROM scratch.items", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };

    // Approved with a scope in a session running with its defaults.
    let mut plain = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    plain
        .send(&query_message("DELETE FROM items WHERE id = 7060"))
        .await;
    let id = notice_id(&mut plain).await;
    let shown = view(&gw, &id).await;
    assert_eq!(shown["settings"], serde_json::json!([]), "{shown}");
    vote(&gw, &id, "approve", r#"{"scope_seconds":600}"#).await;
    assert_eq!(tags(&plain.until_ready().await), "CZ");

    // Another session points `items` elsewhere: the grant does not cover it, and approvers
    // see what the names mean there.
    let mut moved = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let reply = moved
        .exchange(&query_message("SET search_path = scratch, public"))
        .await;
    assert!(tags(&reply).ends_with("CZ"), "{}", tags(&reply));
    moved
        .send(&query_message("DELETE FROM items WHERE id = 7061"))
        .await;
    let held = notice_id(&mut moved).await;
    let shown = view(&gw, &held).await;
    assert_eq!(
        shown["display"]["settings"],
        serde_json::json!(["SET search_path = scratch, public"]),
        "{shown}"
    );
    assert!(
        shown["display"]["scope"]
            .as_str()
            .unwrap()
            .contains("search_path"),
        "{shown}"
    );
    vote(&gw, &held, "deny", "").await;
    assert_eq!(tags(&moved.until_ready().await), "EZ");
    assert_eq!(shadow().await, 2, "nothing ran in the other schema");

    // A session that changed them the same way is covered by a grant made there.
    moved
        .send(&query_message("DELETE FROM items WHERE id = 7061"))
        .await;
    let held = notice_id(&mut moved).await;
    vote(&gw, &held, "approve", r#"{"scope_seconds":600}"#).await;
    assert_eq!(tags(&moved.until_ready().await), "CZ");
    assert_eq!(shadow().await, 1);
    let mut alike = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    alike
        .exchange(&query_message("SET search_path = scratch, public"))
        .await;
    let reply = alike
        .exchange(&query_message("DELETE FROM items WHERE id = 7060"))
        .await;
    assert!(tags(&reply).ends_with("CZ"), "{}", tags(&reply));
    assert_eq!(
        shadow().await,
        0,
        "ran under the grant, in the schema approved"
    );

    // Code the gateway cannot see into may change them (set_config in a function): after it,
    // no earlier grant covers the session.
    let mut opaque = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    opaque
        .exchange(&query_message("SELECT scratch.one()"))
        .await;
    opaque
        .send(&query_message("DELETE FROM items WHERE id = 7062"))
        .await;
    let held = notice_id(&mut opaque).await;
    let shown = view(&gw, &held).await;
    assert!(
        shown["display"]["settings"][0]
            .as_str()
            .unwrap()
            .contains("where the gateway cannot read it"),
        "{shown}"
    );
    vote(&gw, &held, "deny", "").await;
    assert_eq!(tags(&opaque.until_ready().await), "EZ");
    // The plain session is still covered by its grant.
    let reply = plain
        .exchange(&query_message("DELETE FROM items WHERE id = 7063"))
        .await;
    assert!(tags(&reply).ends_with("CZ"), "{}", tags(&reply));
    assert_eq!(rows(&gw, "id BETWEEN 7060 AND 7063").await, 2);
}

#[tokio::test]
async fn approvers_see_search_path_changed_through_the_extended_protocol() {
    let gw = gateway().await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    // A driver's way: Parse, Bind, Execute of set_config; preparing alone changes nothing.
    let mut out = BytesMut::new();
    frontend::parse(
        "moves",
        "SELECT set_config('search_path', 'scratch, public', false)",
        [],
        &mut out,
    )
    .unwrap();
    frontend::sync(&mut out);
    assert_eq!(tags(&raw.exchange(&out).await), "1Z");
    raw.send(&query_message("DELETE FROM items WHERE id = 7070"))
        .await;
    let held = notice_id(&mut raw).await;
    assert_eq!(
        view(&gw, &held).await["settings"],
        serde_json::json!([]),
        "prepared, not run"
    );
    vote(&gw, &held, "deny", "").await;
    assert_eq!(tags(&raw.until_ready().await), "EZ");

    let mut out = BytesMut::new();
    bind_statement_and_execute(&mut out, "moves", &[]);
    frontend::sync(&mut out);
    assert!(tags(&raw.exchange(&out).await).ends_with("CZ"));
    raw.send(&query_message("DELETE FROM items WHERE id = 7070"))
        .await;
    let held = notice_id(&mut raw).await;
    assert_eq!(
        view(&gw, &held).await["settings"],
        serde_json::json!(["SELECT set_config('search_path', 'scratch, public', false)"])
    );
    vote(&gw, &held, "deny", "").await;
    assert_eq!(tags(&raw.until_ready().await), "EZ");
}

#[tokio::test]
async fn a_prepared_change_counts_even_after_a_failed_parse_of_its_name() {
    let gw = gateway().await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let mut out = BytesMut::new();
    frontend::parse(
        "moves",
        "SELECT set_config('search_path', 'scratch, public', false)",
        [],
        &mut out,
    )
    .unwrap();
    frontend::sync(&mut out);
    assert_eq!(tags(&raw.exchange(&out).await), "1Z");
    // Postgres refuses a second Parse of the name ("already exists"): the first definition is
    // the one a Bind runs.
    let mut out = BytesMut::new();
    frontend::parse("moves", "SELECT 1", [], &mut out).unwrap();
    frontend::sync(&mut out);
    assert_eq!(tags(&raw.exchange(&out).await), "EZ");
    let mut out = BytesMut::new();
    bind_statement_and_execute(&mut out, "moves", &[]);
    frontend::sync(&mut out);
    assert!(tags(&raw.exchange(&out).await).ends_with("CZ"));

    raw.send(&query_message("DELETE FROM items WHERE id = 7080"))
        .await;
    let held = notice_id(&mut raw).await;
    assert_eq!(
        view(&gw, &held).await["settings"],
        serde_json::json!(["SELECT set_config('search_path', 'scratch, public', false)"])
    );
    vote(&gw, &held, "deny", "").await;
    assert_eq!(tags(&raw.until_ready().await), "EZ");
}
