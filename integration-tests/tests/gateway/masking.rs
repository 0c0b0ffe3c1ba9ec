//! Masking plugins end to end: every plan kind through psql (text results) and tokio-postgres
//! (binary results, prepared statements), and every known side door closed.

use std::time::Duration;

use sluice_integration_tests::{
    GatewayOptions, PluginSpec, RawClient, TestGateway, as_superuser, error_message, sqlstate, tags,
};

const RULES: &str = r#"
[config]
rules = "customers.email=hash, customers.card=partial(0,4), customers.phone=redact, customers.ssn=null"
exempt_groups = "pii-readers"
"#;

const ALICE: &str = "alice@example.com";
const CARD: &str = "4242424242424242";
const PHONE: &str = "+1 555 0100";

/// The masked tables, created once per test binary.
async fn fixtures() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        as_superuser(&format!(
                "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text UNIQUE,
                     card text, phone text, ssn text, note text, CHECK (length(phone) < 40));
                 INSERT INTO customers VALUES
                     (1, 'Alice', '{ALICE}', '{CARD}', '{PHONE}', '123-45-6789', 'vip'),
                     (2, 'Bob', 'bob@example.com', '5555555555554444', '+1 415-555-0199', NULL,
                      'call bob@example.com or 555-867-5309');
                 CREATE VIEW contacts AS SELECT id, upper(email) AS mail, name FROM customers;
                 CREATE TABLE copies (v text);
                 CREATE FUNCTION shout() RETURNS void LANGUAGE plpgsql AS $$
                 BEGIN RAISE NOTICE 'first email: %', (SELECT email FROM customers ORDER BY id LIMIT 1); END $$;
                 GRANT ALL ON ALL TABLES IN SCHEMA public TO PUBLIC;"
            )).await;
    })
    .await;
}

async fn gateway(plugins: Vec<PluginSpec>) -> TestGateway {
    fixtures().await;
    TestGateway::start_with(GatewayOptions {
        plugins,
        ..GatewayOptions::default()
    })
    .await
}

fn rules() -> PluginSpec {
    PluginSpec::with("mask-pii-columns", "mask-pii-columns", RULES)
}

/// psql's unaligned, tuples-only output of `sql`, asserted successful.
async fn psql(gw: &TestGateway, sql: &str) -> String {
    let out = gw
        .psql("agent", &gw.token("agent"), "require", &["-At", "-c", sql])
        .await;
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_hash(value: &str) {
    assert!(
        value.starts_with("h:") && value.len() == 34,
        "expected a hash, got {value:?}"
    );
}

#[tokio::test]
async fn every_plan_kind_masks_text_results_through_psql() {
    let gw = gateway(vec![rules()]).await;
    let out = psql(
        &gw,
        "SELECT id, name, email, card, phone, ssn FROM customers ORDER BY id",
    )
    .await;
    let first: Vec<&str> = out.lines().next().unwrap().split('|').collect();
    assert_eq!(first[..2], ["1", "Alice"], "keep");
    assert_hash(first[2]);
    assert_eq!(first[3], "************4242", "partial(0,4)");
    assert_eq!(first[4], "[redacted]", "redact");
    assert_eq!(first[5], "", "null");
    assert!(!out.contains(ALICE) && !out.contains(CARD) && !out.contains(PHONE));
    // Stable and keyed: the same value hashes the same in another session and through an alias,
    // so joins and grouping work.
    let again = psql(&gw, "SELECT email AS e FROM customers WHERE id = 1").await;
    assert_eq!(again.trim(), first[2]);
    let grouped = psql(&gw, "SELECT count(*) FROM customers GROUP BY email").await;
    assert_eq!(grouped.lines().count(), 2);
}

#[tokio::test]
async fn binary_results_and_prepared_statements_are_masked_through_tokio_postgres() {
    let gw = gateway(vec![rules()]).await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    // tokio-postgres prepares (Describe), then binds with binary results.
    let row = client
        .query_one(
            "SELECT id, email, card, ssn FROM customers WHERE id = $1",
            &[&1i32],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    assert_hash(row.get::<_, &str>(1));
    assert_eq!(row.get::<_, &str>(2), "************4242");
    assert_eq!(row.get::<_, Option<&str>>(3), None);
    // A masked int column is described as text and hashed too.
    let row = client
        .query_one(
            "SELECT id::int4 AS id, length(email) FROM customers WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    assert_hash(row.get::<_, &str>(1));
    // The statement prepared once keeps masking at every execution.
    let statement = client
        .prepare("SELECT email FROM customers ORDER BY id")
        .await
        .unwrap();
    for _ in 0..3 {
        let rows = client.query(&statement, &[]).await.unwrap();
        assert!(rows.iter().all(|r| r.get::<_, &str>(0).starts_with("h:")));
    }
}

#[tokio::test]
async fn expressions_aggregates_and_whole_rows_over_masked_columns_are_masked() {
    let gw = gateway(vec![rules()]).await;
    for sql in [
        "SELECT upper(email) FROM customers WHERE id = 1",
        "SELECT email || '' FROM customers WHERE id = 1",
        "SELECT substring(card, 1, 12) FROM customers WHERE id = 1",
        "SELECT card::varchar FROM customers WHERE id = 1",
        "SELECT CAST(phone AS varchar(40)) FROM customers WHERE id = 1",
        "SELECT c FROM customers c WHERE id = 1",
        "SELECT row_to_json(c) FROM customers c WHERE id = 1",
        "SELECT to_jsonb(c) FROM customers c WHERE id = 1",
        "SELECT json_agg(c) FROM customers c",
        "SELECT array_agg(email) FROM customers",
        "SELECT string_agg(card, ',') FROM customers",
        "SELECT x FROM (SELECT email AS x FROM customers) s",
        "SELECT upper(name) FROM (SELECT email AS name FROM customers) s",
        "WITH e AS (SELECT card FROM customers) SELECT * FROM e",
        "SELECT name FROM customers UNION ALL SELECT phone FROM customers",
        "SELECT (SELECT email FROM customers LIMIT 1)",
        "SELECT mail FROM contacts",
        "SELECT CASE WHEN email LIKE 'a%' THEN 'a' ELSE 'b' END FROM customers",
    ] {
        let out = psql(&gw, sql).await;
        for secret in [
            ALICE,
            "ALICE@EXAMPLE.COM",
            CARD,
            "424242424242",
            PHONE,
            "bob@example.com",
        ] {
            assert!(!out.contains(secret), "{sql} leaked {secret}: {out}");
        }
    }
    // A whole row carries the ssn column, whose rule is null: the strictest mask wins.
    assert_eq!(
        psql(&gw, "SELECT c FROM customers c WHERE id = 1")
            .await
            .trim(),
        ""
    );
    assert_hash(
        psql(&gw, "SELECT lower(email) FROM customers WHERE id = 1")
            .await
            .trim(),
    );
    assert_eq!(
        psql(
            &gw,
            "SELECT substring(card, 1, 12) FROM customers WHERE id = 1"
        )
        .await
        .trim(),
        "[redacted]",
        "partial becomes redact on a computed value"
    );
    // Computed columns that read no masked column are left alone.
    assert_eq!(
        psql(&gw, "SELECT upper(name) FROM customers WHERE id = 1")
            .await
            .trim(),
        "ALICE"
    );
    assert_eq!(
        psql(&gw, "SELECT count(*) FROM customers").await.trim(),
        "2"
    );
}

#[tokio::test]
async fn copy_out_and_writes_that_would_carry_masked_values_are_refused() {
    let gw = gateway(vec![rules()]).await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    for sql in [
        "COPY customers TO STDOUT",
        "COPY (SELECT email FROM customers) TO STDOUT",
        "COPY (SELECT * FROM customers) TO STDOUT (FORMAT csv)",
        "INSERT INTO copies SELECT email FROM customers",
        "UPDATE customers SET note = card WHERE id = 1",
        "CREATE TABLE stolen AS SELECT phone FROM customers",
        "SELECT email INTO stolen2 FROM customers",
        "CREATE VIEW peek AS SELECT email FROM customers",
    ] {
        let e = client.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e:?}");
        assert!(
            error_message(&e).contains("masked columns"),
            "{sql}: {}",
            error_message(&e)
        );
    }
    // What carries no masked value still runs.
    let out = psql(
        &gw,
        "COPY (SELECT id, name FROM customers ORDER BY id) TO STDOUT",
    )
    .await;
    assert_eq!(out, "1\tAlice\n2\tBob\n");
    client
        .batch_execute("INSERT INTO copies SELECT name FROM customers WHERE email = 'x'")
        .await
        .unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM copies", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn returning_cursors_and_partial_executes_are_masked() {
    let gw = gateway(vec![rules()]).await;
    let mut client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let row = client
        .query_one(
            "UPDATE customers SET name = name WHERE id = 1 RETURNING email, name",
            &[],
        )
        .await
        .unwrap();
    assert_hash(row.get::<_, &str>(0));
    // A cursor: FETCH is planned with the DECLARE's columns.
    let out = psql(
        &gw,
        "BEGIN; DECLARE c CURSOR FOR SELECT upper(email), card FROM customers ORDER BY id; \
         FETCH 1 FROM c; FETCH 1 FROM c; COMMIT",
    )
    .await;
    assert!(!out.contains("ALICE") && !out.contains(CARD), "{out}");
    assert!(out.contains("****4444"), "{out}");
    // An Execute with a row limit: every batch of the portal is masked.
    let tx = client.transaction().await.unwrap();
    let statement = tx
        .prepare("SELECT email FROM customers ORDER BY id")
        .await
        .unwrap();
    let portal = tx.bind(&statement, &[]).await.unwrap();
    for _ in 0..2 {
        let rows = tx.query_portal(&portal, 1).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_hash(rows[0].get::<_, &str>(0));
    }
    tx.commit().await.unwrap();
    // A cursor the gateway never saw declared cannot be accounted for.
    let e = client
        .batch_execute("FETCH 1 FROM nowhere")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert!(
        error_message(&e).contains("cannot be masked"),
        "{}",
        error_message(&e)
    );
}

#[tokio::test]
async fn extended_protocol_without_describe_is_masked_by_an_injected_describe() {
    let gw = gateway(vec![rules()]).await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let mut out = bytes::BytesMut::new();
    postgres_protocol::message::frontend::parse(
        "",
        "SELECT email FROM customers WHERE id = 1",
        std::iter::empty(),
        &mut out,
    )
    .unwrap();
    sluice_integration_tests::bind_and_execute(&mut out, &[]);
    postgres_protocol::message::frontend::sync(&mut out);
    let reply = raw.exchange(&out).await;
    // No RowDescription reaches the client: it did not ask for one.
    assert_eq!(tags(&reply), "12DCZ");
    let value = sluice::masking::data_row_values(&reply[2].body).unwrap()[0].unwrap();
    assert_hash(std::str::from_utf8(value).unwrap());
}

#[tokio::test]
async fn errors_and_notices_do_not_echo_masked_values() {
    let gw = gateway(vec![rules()]).await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let e = client
        .query("SELECT email::int FROM customers", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22P02");
    let db = e.as_db_error().unwrap();
    assert!(!db.message().contains(ALICE), "{}", db.message());
    let e = client
        .batch_execute(
            "INSERT INTO customers (id, name, email) VALUES (3, 'Eve', 'bob@example.com')",
        )
        .await
        .unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "23505");
    assert_eq!(db.constraint(), Some("customers_email_key"));
    assert!(
        !db.detail().unwrap_or_default().contains("bob@"),
        "{:?}",
        db.detail()
    );
    let e = client
        .batch_execute("UPDATE customers SET phone = repeat('9', 50) WHERE id = 1")
        .await
        .unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "23514");
    assert!(
        !db.detail().unwrap_or_default().contains(ALICE),
        "{:?}",
        db.detail()
    );
    // Names the client wrote itself stay in the message, in the extended protocol too.
    let e = client
        .prepare("SELECT nosuchcol FROM customers")
        .await
        .unwrap_err();
    assert!(
        error_message(&e).contains("\"nosuchcol\""),
        "{}",
        error_message(&e)
    );
    // A function that RAISEs what it read: user-defined, so refused by default...
    let out = gw
        .psql(
            "agent",
            &gw.token("agent"),
            "require",
            &["-c", "SELECT shout()"],
        )
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("user-defined") && !stderr.contains(ALICE),
        "{stderr}"
    );
    // ... and where user functions are allowed (`derive`), its notice is scrubbed.
    let derive = TestGateway::start_with(GatewayOptions {
        plugins: vec![rules()],
        extra_toml: "[masking]\nuser_functions = \"derive\"\n".into(),
        ..GatewayOptions::default()
    })
    .await;
    let out = derive
        .psql(
            "agent",
            &derive.token("agent"),
            "require",
            &["-c", "SELECT shout()"],
        )
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("withheld") && !stderr.contains(ALICE),
        "{stderr}"
    );
}

#[tokio::test]
async fn exempt_groups_see_values_and_others_do_not() {
    let gw = gateway(vec![rules()]).await;
    let reader = gw.token_with_groups("dpo", &["pii-readers"]);
    let client = gw.connect("dpo", &reader).await.unwrap();
    let email: String = client
        .query_one("SELECT email FROM customers WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(email, ALICE);
    assert_hash(
        psql(&gw, "SELECT email FROM customers WHERE id = 1")
            .await
            .trim(),
    );
}

#[tokio::test]
async fn content_scanning_masks_personal_data_in_any_text_column() {
    let gw = gateway(vec![PluginSpec::stock("pii-scan")]).await;
    let out = psql(
        &gw,
        "SELECT note, 'mail ' || email, id FROM customers ORDER BY id",
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "vip|mail [email]|1");
    assert_eq!(lines[1], "call [email] or [phone]|mail [email]|2");
    let out = psql(&gw, "SELECT card, ssn FROM customers WHERE id = 1").await;
    assert_eq!(out.trim(), "[card]|[ssn]");
    // Checksums decide: a valid IBAN and card go, digits that fail Luhn or mod-97 stay.
    let out = psql(
        &gw,
        "SELECT 'iban GB82 WEST 1234 5698 7654 32', 'card 4242 4242 4242 4242', \
         'not a card 1234 5678 9012 3456', 'order 42 shipped', 'ssn 000-12-3456'",
    )
    .await;
    assert_eq!(
        out.trim(),
        "iban [iban]|card [card]|not a card 1234 5678 9012 3456|order 42 shipped|ssn 000-12-3456"
    );
    // Binary results through tokio-postgres: text values are transformed in place.
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let row = client
        .query_one(
            "SELECT note, phone, id FROM customers WHERE id = $1",
            &[&2i32],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "call [email] or [phone]");
    assert_eq!(row.get::<_, &str>(1), "[phone]");
    assert_eq!(row.get::<_, i32>(2), 2);
    // Batched: a result larger than one transform batch keeps every row.
    let out = psql(
        &gw,
        "SELECT g, 'mail: x' || g || '@example.com' FROM generate_series(1, 1000) g",
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1000);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(*line, format!("{}|mail: [email]", i + 1));
    }
}

#[tokio::test]
async fn several_plugins_combine_to_the_strictest_mask() {
    let gw = gateway(vec![rules(), PluginSpec::stock("pii-scan")]).await;
    let out = psql(&gw, "SELECT email, note, card FROM customers WHERE id = 2").await;
    let cols: Vec<&str> = out.trim().split('|').collect();
    assert_hash(cols[0]);
    assert_eq!(cols[1], "call [email] or [phone]");
    assert_eq!(cols[2], "************4444");
}

#[tokio::test]
async fn a_failing_masking_plugin_withholds_values_and_the_session_goes_on() {
    for mode in ["trap", "spin", "short", "transform-trap"] {
        let manifest = format!("[config]\nmode = \"{mode}\"\n");
        let gw = gateway(vec![PluginSpec::with(
            "faulty",
            "test-mask-faults",
            &manifest,
        )])
        .await;
        let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
        let started = std::time::Instant::now();
        let rows = client
            .simple_query("SELECT email FROM customers ORDER BY id")
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(2), "{mode}");
        let values: Vec<Option<String>> = rows
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_owned)),
                _ => None,
            })
            .collect();
        assert_eq!(values, [None, None], "{mode}: values withheld");
        // The session goes on (every result of this plugin is withheld, even this one).
        let rows = client.simple_query("SELECT 41 + 1").await.unwrap();
        let count = rows
            .iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count();
        assert_eq!(count, 1, "{mode}: one row");
    }
}

#[tokio::test]
async fn tables_created_through_the_gateway_are_masked_at_once() {
    let rule = r#"
[config]
rules = "*.email=redact(hidden)"
"#;
    let gw = gateway(vec![PluginSpec::with(
        "mask-pii-columns",
        "mask-pii-columns",
        rule,
    )])
    .await;
    // Warm the catalog before the table exists.
    psql(&gw, "SELECT email FROM customers LIMIT 1").await;
    // One query string is one transaction: the side connection cannot see the new table
    // yet, so its values are withheld rather than guessed at.
    let out = psql(
        &gw,
        "CREATE TABLE signups (email text, n int); INSERT INTO signups VALUES ('new@example.com', 1); \
         SELECT email, n FROM signups",
    )
    .await;
    assert_eq!(out, "CREATE TABLE\nINSERT 0 1\n|\n");
    // Committed through the gateway: the catalog is read again and the rule applies.
    let out = psql(&gw, "SELECT * FROM signups").await;
    assert_eq!(out.trim(), "hidden|1");
}

#[tokio::test]
async fn masking_is_recorded_in_the_audit_log_without_values() {
    let gw = gateway(vec![rules()]).await;
    psql(&gw, "SELECT email, card FROM customers").await;
    let path = gw.config.audit_path();
    let mut found = None;
    for _ in 0..50 {
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| l.contains("\"type\":\"masking\"")) {
            found = Some(line.to_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = found.expect("a masking record");
    assert!(
        line.contains("public.customers.email") && line.contains("\"hash\""),
        "{line}"
    );
    assert!(
        line.contains("\"partial\"") && !line.contains(ALICE),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masking_plugins_hot_reloaded_under_pgbench_fail_nothing_and_apply_to_open_sessions() {
    let gw = gateway(vec![PluginSpec::stock("no-ddl")]).await;
    // A session that prepared its statement before any masking plugin existed.
    let early = gw.connect("early", &gw.token("early")).await.unwrap();
    let prepared = early
        .prepare("SELECT id, email FROM customers WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(
        early
            .query_one(&prepared, &[])
            .await
            .unwrap()
            .get::<_, &str>(1),
        ALICE
    );

    let script = sluice_integration_tests::pgbench_script(
        "\\set id random(1, 2)\nSELECT email, card FROM customers WHERE id = :id;\n",
    );
    let pgbench = sluice_integration_tests::pgbench(
        gw.port(),
        "bench",
        &gw.token("bench"),
        &["-n", "-c", "4", "-j", "2", "-T", "6", "-M", "extended"],
        script.path(),
    )
    .output();
    let swaps = async {
        let probe = gw.connect("prober", &gw.token("prober")).await.unwrap();
        let path = gw.plugin_dir().join("mask-pii-columns.wasm");
        for i in 0..6 {
            let masked = i % 2 == 0;
            if masked {
                rules().install(&gw.plugin_dir());
            } else {
                std::fs::remove_file(&path).unwrap();
            }
            let changed = std::time::Instant::now();
            loop {
                let rows = probe
                    .simple_query("SELECT email FROM customers WHERE id = 1")
                    .await
                    .unwrap();
                let value = rows.iter().find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                });
                if (value.as_deref() != Some(ALICE)) == masked {
                    break;
                }
                assert!(
                    changed.elapsed() < Duration::from_secs(1),
                    "swap {i} not visible"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if masked {
                // The statement prepared before: its text column is masked in place.
                let row = early.query_one(&prepared, &[]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), 1);
                assert_hash(row.get::<_, &str>(1));
            }
        }
    };
    let (out, ()) = tokio::join!(pgbench, swaps);
    let out = out.unwrap();
    sluice_integration_tests::assert_pgbench_clean(&out);
}
