//! Every exit of a masked value, and what masking must leave alone. With `mask-pii-columns`
//! masking `mx_people.email` and `mx_people.card`: the planner's statistics, functions whose
//! bodies read the table (SQL, PL/pgSQL, SECURITY DEFINER, set-returning in FROM), built-ins
//! that read tables by name, notifications and settings used as a stash, and DO blocks are
//! refused; built-in functions keep their arguments' lineage; and the system catalogs, which
//! carry names rather than rows, stay readable so that psql's `\d` and ORMs' introspection work.
//! Refusals are checked in the raw bytes the client received: the value appears nowhere, in
//! any case or encoding.

use sluice_integration_tests::{
    DATABASE, GatewayOptions, PluginSpec, RawClient, TestGateway, as_superuser, query_message,
    sqlstate,
};

const EMAIL: &str = "Mallory.Secret@Example.com";
const CARD: &str = "4000123412341234";

async fn fixtures() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        as_superuser(&format!(
            "CREATE TABLE mx_people (id int PRIMARY KEY, name text, email text, card text);
                 INSERT INTO mx_people SELECT g, 'person ' || g, '{EMAIL}', '{CARD}'
                     FROM generate_series(1, 50) g;
                 ANALYZE mx_people;
                 CREATE VIEW mx_stats AS SELECT attname, most_common_vals::text AS v FROM pg_stats
                     WHERE tablename = 'mx_people';
                 CREATE FUNCTION mx_sql() RETURNS text LANGUAGE sql
                     AS 'SELECT email FROM mx_people LIMIT 1';
                 CREATE FUNCTION mx_plpgsql() RETURNS text LANGUAGE plpgsql
                     AS $$ BEGIN RETURN (SELECT card FROM mx_people LIMIT 1); END $$;
                 CREATE FUNCTION mx_definer() RETURNS text LANGUAGE sql SECURITY DEFINER
                     AS 'SELECT email FROM mx_people LIMIT 1';
                 CREATE FUNCTION mx_rows() RETURNS SETOF text LANGUAGE sql
                     AS 'SELECT email FROM mx_people';
                 CREATE FUNCTION mx_attr(mx_people) RETURNS text LANGUAGE sql
                     AS 'SELECT $1.email';
                 GRANT ALL ON mx_people, mx_stats TO PUBLIC;"
        ))
        .await;
    })
    .await;
}

async fn gateway(extra_toml: &str) -> TestGateway {
    fixtures().await;
    TestGateway::start_with(GatewayOptions {
        plugins: vec![PluginSpec::with(
            "mask-pii-columns",
            "mask-pii-columns",
            "[config]\nrules = \"mx_people.email=hash, mx_people.card=partial(0,4)\"\n",
        )],
        extra_toml: extra_toml.into(),
        ..GatewayOptions::default()
    })
    .await
}

/// Whether `bytes` hold `value` in any case, or as hex or base64 of any case.
fn carries(bytes: &[u8], value: &str) -> bool {
    let text = String::from_utf8_lossy(bytes).to_ascii_lowercase();
    let forms = [value.to_owned(), value.to_uppercase(), value.to_lowercase()];
    forms.iter().any(|form| {
        let hex: String = form.bytes().map(|b| format!("{b:02x}")).collect();
        text.contains(&form.to_ascii_lowercase())
            || text.contains(&hex)
            || String::from_utf8_lossy(bytes).contains(&base64(form.as_bytes()))
    })
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Sends `sql` on a raw session and returns every byte of every message up to ReadyForQuery,
/// with the SQLSTATE of the error among them (empty if none).
async fn exchange(raw: &mut RawClient, sql: &str) -> (Vec<u8>, String) {
    let messages = raw.exchange(&query_message(sql)).await;
    let code = messages
        .iter()
        .find(|m| m.tag == b'E')
        .map(|m| m.sqlstate())
        .unwrap_or_default();
    let bytes = messages.iter().flat_map(|m| m.body.to_vec()).collect();
    (bytes, code)
}

/// `sql` is refused with 42501 and nothing of a masked value reaches the client.
async fn refused_without_a_trace(raw: &mut RawClient, sql: &str) {
    let (bytes, code) = exchange(raw, sql).await;
    assert_eq!(code, "42501", "{sql}: {}", String::from_utf8_lossy(&bytes));
    assert!(!carries(&bytes, EMAIL), "{sql}");
    assert!(!carries(&bytes, CARD), "{sql}");
}

#[tokio::test]
async fn the_planners_statistics_are_refused_under_masking() {
    let gw = gateway("").await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    for sql in [
        "SELECT most_common_vals FROM pg_stats WHERE tablename = 'mx_people'",
        "SELECT * FROM pg_catalog.pg_stats",
        "select histogram_bounds::text from PG_STATS",
        "SELECT v FROM mx_stats",
        "SELECT * FROM pg_stats_ext",
        "WITH s AS (SELECT * FROM pg_stats) SELECT count(*) FROM s",
    ] {
        refused_without_a_trace(&mut raw, sql).await;
    }
}

#[tokio::test]
async fn functions_and_built_ins_that_read_masked_tables_are_refused() {
    let gw = gateway("").await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    for sql in [
        "SELECT mx_sql()",
        "SELECT public.mx_plpgsql()",
        "SELECT mx_definer()",
        "SELECT * FROM mx_rows()",
        "SELECT r FROM mx_people p, LATERAL mx_rows() r",
        "SELECT * FROM ROWS FROM (mx_rows(), generate_series(1, 2))",
        "SELECT upper(x) FROM (SELECT mx_sql() AS x) s",
        "SELECT app.public.mx_sql()",
        "SELECT p.mx_attr FROM mx_people p",
        "SELECT table_to_xml('mx_people', true, false, '')",
        "SELECT query_to_xml('SELECT email FROM mx_people', true, false, '')",
        "SELECT pg_catalog.database_to_xml(true, false, '')",
        "DO $$ BEGIN RAISE NOTICE '%', (SELECT email FROM mx_people LIMIT 1); END $$",
    ] {
        refused_without_a_trace(&mut raw, sql).await;
    }
    // Built-in functions keep the lineage of their arguments: the values arrive masked.
    for sql in [
        "SELECT unnest(ARRAY(SELECT email FROM mx_people LIMIT 2))",
        "SELECT * FROM unnest(ARRAY(SELECT card FROM mx_people LIMIT 2)) u",
        "SELECT string_agg(email, ',') FROM mx_people",
        "SELECT encode(convert_to(email, 'UTF8'), 'base64') FROM mx_people LIMIT 1",
        "SELECT x FROM mx_people, LATERAL (SELECT lower(email) AS x) l LIMIT 1",
    ] {
        let (bytes, code) = exchange(&mut raw, sql).await;
        assert_eq!(code, "", "{sql}: {}", String::from_utf8_lossy(&bytes));
        assert!(!carries(&bytes, EMAIL) && !carries(&bytes, CARD), "{sql}");
    }
}

#[tokio::test]
async fn a_user_function_counts_as_derived_from_its_schema_where_so_configured() {
    let gw = gateway("[masking]\nuser_functions = \"derive\"\n").await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    for sql in ["SELECT mx_sql()", "SELECT * FROM mx_rows() LIMIT 3"] {
        let (bytes, code) = exchange(&mut raw, sql).await;
        assert_eq!(code, "", "{sql}: {}", String::from_utf8_lossy(&bytes));
        assert!(!carries(&bytes, EMAIL), "{sql}");
    }
}

#[tokio::test]
async fn notifications_and_settings_cannot_carry_masked_values_out() {
    let gw = gateway("").await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    let (bytes, code) = exchange(&mut raw, "LISTEN mx").await;
    assert_eq!(code, "", "{}", String::from_utf8_lossy(&bytes));
    for sql in [
        "SELECT pg_notify('mx', email) FROM mx_people LIMIT 1",
        "SELECT 1 FROM mx_people WHERE pg_notify('mx', card) IS NULL",
        "SELECT set_config('mx.stash', email, false) FROM mx_people LIMIT 1",
        "SELECT pg_catalog.set_config('mx.stash', (SELECT card FROM mx_people LIMIT 1), false)",
        "SELECT lo_put(4242, 0, convert_to(email, 'UTF8')) FROM mx_people WHERE id = 1",
        "SELECT setval('mx_seq', length(card)) FROM mx_people LIMIT 1",
    ] {
        refused_without_a_trace(&mut raw, sql).await;
    }
    let (bytes, _) = exchange(&mut raw, "SELECT current_setting('mx.stash', true)").await;
    assert!(!carries(&bytes, EMAIL) && !carries(&bytes, CARD));
    // Constants pass, and arrive.
    let (bytes, code) = exchange(&mut raw, "NOTIFY mx, 'constant payload'").await;
    assert_eq!(code, "");
    assert!(String::from_utf8_lossy(&bytes).contains("constant payload"));
}

#[tokio::test]
async fn system_catalogs_stay_readable_under_masking() {
    let gw = gateway("").await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let name: String = client
        .query_one(
            "SELECT relname::text FROM pg_class WHERE relname = 'mx_people'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "mx_people");
    let columns: Vec<String> = client
        .query(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_name = 'mx_people' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(columns, ["id", "name", "email", "card"]);
    // psql's own introspection.
    for (command, expect) in [
        ("\\dt mx_*", "mx_people"),
        ("\\d mx_people", "email"),
        ("\\l", DATABASE),
        ("\\df mx_*", "mx_rows"),
    ] {
        let out = gw
            .psql("agent", &gw.token("agent"), "require", &["-c", command])
            .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{command}: {stderr}");
        assert!(stdout.contains(expect), "{command}: {stdout}");
        assert!(!stderr.contains("withheld"), "{command}: {stderr}");
    }
    // The user's table is still masked.
    let email: String = client
        .query_one("SELECT email FROM mx_people WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert!(email.starts_with("h:"), "{email}");
    assert_eq!(
        sqlstate_of(&client, "SELECT v FROM mx_stats").await,
        "42501"
    );
}

async fn sqlstate_of(client: &tokio_postgres::Client, sql: &str) -> String {
    sqlstate(&client.simple_query(sql).await.unwrap_err())
}

#[test]
fn the_byte_search_finds_a_value_in_every_form_it_looks_for() {
    let hex: String = EMAIL
        .to_lowercase()
        .bytes()
        .map(|b| format!("{b:02X}"))
        .collect();
    for found in [
        format!("..{EMAIL}.."),
        format!("..{}..", EMAIL.to_uppercase()),
        format!("\\x{hex}"),
        base64(EMAIL.as_bytes()),
    ] {
        assert!(carries(found.as_bytes(), EMAIL), "{found}");
    }
    assert_eq!(base64(b"Man"), "TWFu");
    assert!(!carries(b"h:0123456789abcdef", EMAIL));
}

#[tokio::test]
async fn a_strict_masking_plugin_lets_no_masked_column_answer_a_question() {
    fixtures().await;
    let gw = TestGateway::start_with(GatewayOptions {
        plugins: vec![PluginSpec::with(
            "mask-pii-columns",
            "mask-pii-columns",
            "strict = true\n[config]\nrules = \"mx_people.email=hash, mx_people.card=partial(0,4)\"\n",
        )],
        ..GatewayOptions::default()
    })
    .await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    for sql in [
        "SELECT id FROM mx_people WHERE email LIKE 'M%'",
        "SELECT id FROM mx_people WHERE lower(card) = '4000123412341234'",
        "SELECT id FROM mx_people ORDER BY card",
        "SELECT count(*) FROM mx_people GROUP BY email",
        "SELECT CASE WHEN email > 'm' THEN 1 ELSE 0 END FROM mx_people",
        "SELECT a.id FROM mx_people a JOIN mx_people b ON a.email = b.email",
        "SELECT count(*) FILTER (WHERE card LIKE '4%') FROM mx_people",
        "SELECT id FROM items WHERE EXISTS (SELECT 1 FROM mx_people WHERE email = 'x')",
        "SELECT e FROM (SELECT email AS e FROM mx_people) s ORDER BY e",
        "SELECT c.id FROM mx_people c JOIN (VALUES ('x')) g(email) USING (email)",
        "SELECT c.id FROM mx_people c NATURAL JOIN (VALUES ('x')) g(email)",
        "SELECT 1 FROM (SELECT email FROM mx_people INTERSECT SELECT 'x') s",
        "SELECT DISTINCT card FROM mx_people",
    ] {
        refused_without_a_trace(&mut raw, sql).await;
    }
    // Reading the masked values and filtering on other columns pass.
    let (bytes, code) = exchange(
        &mut raw,
        "SELECT email, card FROM mx_people WHERE id < 3 ORDER BY name",
    )
    .await;
    assert_eq!(code, "", "{}", String::from_utf8_lossy(&bytes));
    assert!(!carries(&bytes, EMAIL) && !carries(&bytes, CARD));
    // Without `strict`, conditions on masked columns run (documented: inference is possible).
    let lenient = gateway("").await;
    let client = lenient
        .connect("agent", &lenient.token("agent"))
        .await
        .unwrap();
    client
        .simple_query("SELECT id FROM mx_people WHERE email LIKE 'M%'")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_column_nothing_can_account_for_is_withheld_with_a_warning_naming_it() {
    let gw = gateway("").await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;
    // A table created in a transaction still open is invisible to the catalog's connection.
    for sql in [
        "BEGIN",
        "CREATE TABLE mx_fresh (secret text)",
        "INSERT INTO mx_fresh VALUES ('s3cret')",
    ] {
        let (bytes, code) = exchange(&mut raw, sql).await;
        assert_eq!(code, "", "{sql}: {}", String::from_utf8_lossy(&bytes));
    }
    let messages = raw
        .exchange(&query_message("SELECT secret FROM mx_fresh"))
        .await;
    let warning = messages.iter().find(|m| m.tag == b'N').expect("a warning");
    assert_eq!(warning.sqlstate(), "01000");
    assert!(
        warning.message().contains("\"secret\"") && warning.message().contains("catalog"),
        "{}",
        warning.message()
    );
    let bytes: Vec<u8> = messages.iter().flat_map(|m| m.body.to_vec()).collect();
    assert!(!String::from_utf8_lossy(&bytes).contains("s3cret"));
    exchange(&mut raw, "ROLLBACK").await;
}

/// Found by an attacker's review: portals, cursors and prepared names that the masking side
/// could mistake for another, each of which returned masked values unmasked.
#[tokio::test]
async fn rows_of_a_name_are_never_planned_as_another_names() {
    use bytes::BytesMut;
    use postgres_protocol::message::frontend;
    let gw = gateway("").await;
    let mut raw = RawClient::connect(&gw, "agent", &gw.token("agent")).await;

    // An Execute of a cursor the tracker never saw bound, after the unnamed statement (a
    // harmless one) was described.
    let (bytes, code) = exchange(
        &mut raw,
        "DECLARE cur CURSOR WITH HOLD FOR SELECT email, card FROM mx_people",
    )
    .await;
    assert_eq!(code, "", "{}", String::from_utf8_lossy(&bytes));
    let mut out = BytesMut::new();
    frontend::parse("", "SELECT 'x'::text", [], &mut out).unwrap();
    frontend::describe(b'S', "", &mut out).unwrap();
    frontend::sync(&mut out);
    raw.exchange(&out).await;
    let mut out = BytesMut::new();
    frontend::execute("cur", 3, &mut out).unwrap();
    frontend::sync(&mut out);
    let answer = raw.exchange(&out).await;
    let bytes: Vec<u8> = answer.iter().flat_map(|m| m.body.to_vec()).collect();
    assert!(
        answer.iter().any(|m| m.tag == b'D'),
        "{}",
        sluice_integration_tests::tags(&answer)
    );
    assert!(
        !carries(&bytes, EMAIL) && !carries(&bytes, CARD),
        "Execute of a cursor"
    );

    // A re-PREPARE Postgres refuses: EXECUTE still runs the first definition.
    exchange(&mut raw, "PREPARE x AS SELECT upper(email) FROM mx_people").await;
    let (_, code) = exchange(&mut raw, "PREPARE x AS SELECT upper('a')").await;
    assert_eq!(code, "42P05");
    let (bytes, _) = exchange(&mut raw, "EXECUTE x").await;
    assert!(
        !carries(&bytes, EMAIL),
        "EXECUTE after a refused re-PREPARE"
    );
    // Likewise for a cursor declared twice.
    exchange(&mut raw, "BEGIN").await;
    exchange(
        &mut raw,
        "DECLARE c2 CURSOR FOR SELECT lower(card) FROM mx_people",
    )
    .await;
    let (_, code) = exchange(&mut raw, "DECLARE c2 CURSOR FOR SELECT 'a'").await;
    assert_eq!(code, "42P03");
    exchange(&mut raw, "ROLLBACK").await;

    // A SQL cursor's name bound again as a protocol portal: FETCH reads the portal.
    exchange(&mut raw, "BEGIN").await;
    exchange(&mut raw, "DECLARE p9 CURSOR FOR SELECT 1").await;
    exchange(&mut raw, "CLOSE p9").await;
    let mut out = BytesMut::new();
    frontend::parse("leak", "SELECT upper(email) FROM mx_people", [], &mut out).unwrap();
    frontend::bind(
        "p9",
        "leak",
        std::iter::empty::<i16>(),
        std::iter::empty::<&[u8]>(),
        |_: &[u8],
         _: &mut BytesMut|
         -> Result<postgres_protocol::IsNull, Box<dyn std::error::Error + Sync + Send>> {
            unreachable!()
        },
        Some(0i16),
        &mut out,
    )
    .map_err(|_| ())
    .unwrap();
    frontend::sync(&mut out);
    raw.exchange(&out).await;
    let (bytes, code) = exchange(&mut raw, "FETCH ALL p9").await;
    assert!(
        code == "42501" || !carries(&bytes, EMAIL),
        "FETCH of a protocol portal: {code}"
    );
    assert!(!carries(&bytes, EMAIL));
    exchange(&mut raw, "ROLLBACK").await;

    // CREATE TABLE AS EXECUTE copies what the prepared statement reads.
    exchange(
        &mut raw,
        "PREPARE copyme AS SELECT email AS e FROM mx_people",
    )
    .await;
    for sql in [
        "CREATE TABLE mx_copy AS EXECUTE copyme",
        "EXPLAIN ANALYZE CREATE TABLE mx_copy2 AS EXECUTE copyme",
    ] {
        refused_without_a_trace(&mut raw, sql).await;
    }
}
