//! Warm upstream connections: a session that ends at rest leaves its upstream connection reset
//! (`DISCARD ALL`) for the next session with exactly the same login, which sees nothing of the
//! previous one; any other ending, any other login, a closed or expired connection gets a new
//! login.

use std::time::{Duration, Instant};

use sluice::config::UpstreamTlsMode;
use sluice::metrics::DatabaseLabels;
use std::io::Write;

use sluice_integration_tests::{
    DATABASE, GatewayOptions, Roles, TestGateway, as_superuser, audit_records_when, http, postgres,
};

fn warm(gw: &TestGateway) -> i64 {
    gw.metrics.upstream_warm.get_or_create(&labels()).get()
}

fn taken(gw: &TestGateway) -> u64 {
    gw.metrics
        .upstream_warm_taken
        .get_or_create(&labels())
        .get()
}

fn labels() -> DatabaseLabels {
    DatabaseLabels {
        database: DATABASE.to_owned(),
    }
}

/// Waits until `done` holds, polling: the reset and the closing happen after the client left.
async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < Duration::from_secs(10), "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until Postgres' backend `pid` has exited (`why`: what made it exit).
async fn until_exited(pid: i32, why: &str) {
    until(why, async || !backend_alive(pid).await).await;
}

/// Whether Postgres still has backend `pid`.
async fn backend_alive(pid: i32) -> bool {
    let superuser = postgres()
        .server
        .superuser_client(DATABASE)
        .await
        .expect("superuser connects");
    let rows = superuser
        .query("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid])
        .await
        .unwrap();
    !rows.is_empty()
}

async fn backend_pid(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

async fn text(client: &tokio_postgres::Client, sql: &str) -> Option<String> {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn the_next_identical_login_gets_the_warm_backend_with_nothing_of_the_last_session_left() {
    let gw = TestGateway::start().await;
    let token = gw.token("warm-agent");
    let first = gw.connect("warm-agent", &token).await.unwrap();
    let pid = backend_pid(&first).await;
    let default_work_mem = text(&first, "SHOW work_mem").await;
    let application_name = text(&first, "SHOW application_name").await;
    first
        .batch_execute(
            "CREATE TEMP TABLE left_behind (secret text);
             INSERT INTO left_behind VALUES ('from the last session');
             PREPARE left_plan AS SELECT 1;
             SET work_mem = '7MB';
             SET application_name = 'someone else';
             SELECT set_config('left.behind', 'secret', false);
             SELECT pg_advisory_lock(4242);
             LISTEN left_channel;
             BEGIN; DECLARE left_cursor CURSOR WITH HOLD FOR SELECT 1; COMMIT;",
        )
        .await
        .unwrap();
    drop(first);
    until("the connection is kept warm", async || warm(&gw) == 1).await;

    let second = gw.connect("warm-agent", &token).await.unwrap();
    assert_eq!(
        backend_pid(&second).await,
        pid,
        "the warm backend is reused"
    );
    assert_eq!(taken(&gw), 1);
    assert_eq!(warm(&gw), 0);
    let left: i64 = second
        .query_one(
            "SELECT (SELECT count(*) FROM pg_class WHERE relname = 'left_behind')
                  + (SELECT count(*) FROM pg_prepared_statements WHERE name = 'left_plan')
                  + (SELECT count(*) FROM pg_cursors WHERE name = 'left_cursor')
                  + (SELECT count(*) FROM pg_listening_channels())
                  + (SELECT count(*) FROM pg_locks
                     WHERE locktype = 'advisory' AND pid = pg_backend_pid())",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        left, 0,
        "temp tables, plans, cursors, channels and locks are gone"
    );
    assert_eq!(text(&second, "SHOW work_mem").await, default_work_mem);
    assert_eq!(
        text(&second, "SHOW application_name").await,
        application_name,
        "Postgres' logs name the subject again"
    );
    assert_ne!(
        text(&second, "SELECT current_setting('left.behind', true)").await,
        Some("secret".to_owned())
    );
    // The audit log names the backend of both sessions: Postgres' `%p` joins them.
    let starts = audit_records_when(&gw.config.audit_path(), |all| {
        all.iter().filter(|r| r["type"] == "session_start").count() == 2
    })
    .await;
    let pids: Vec<i64> = starts
        .iter()
        .filter(|r| r["type"] == "session_start")
        .map(|r| r["upstream_pid"].as_i64().expect("upstream_pid"))
        .collect();
    assert_eq!(pids, [i64::from(pid), i64::from(pid)]);
    // The session works as any other: statements, errors, transactions.
    let err = second.batch_execute("SELECT * FROM left_behind").await;
    assert_eq!(err.unwrap_err().code().unwrap().code(), "42P01");
    second
        .batch_execute("BEGIN; SELECT 1; COMMIT")
        .await
        .unwrap();
}

#[tokio::test]
async fn another_subject_another_token_or_a_read_only_grant_never_gets_anothers_warm_backend() {
    let gw = TestGateway::start().await;
    let token = gw.token("warm-owner");
    let owner = gw.connect("warm-owner", &token).await.unwrap();
    let pid = backend_pid(&owner).await;
    drop(owner);
    until("the connection is kept warm", async || warm(&gw) == 1).await;

    let other = gw
        .connect("warm-other", &gw.token("warm-other"))
        .await
        .unwrap();
    assert_ne!(backend_pid(&other).await, pid);
    let another_token = gw.token("warm-owner");
    let same_subject = gw.connect("warm-owner", &another_token).await.unwrap();
    assert_ne!(
        backend_pid(&same_subject).await,
        pid,
        "another token of the same subject logs in afresh"
    );
    let read_only = gw
        .tokens
        .mint_read_only("warm-owner", DATABASE, &[], Duration::from_secs(300))
        .unwrap();
    let reader = gw.connect("warm-owner", &read_only).await.unwrap();
    assert_ne!(backend_pid(&reader).await, pid);
    assert_eq!(
        text(&reader, "SHOW default_transaction_read_only").await,
        Some("on".to_owned())
    );
    assert_eq!(taken(&gw), 0);

    let again = gw.connect("warm-owner", &token).await.unwrap();
    assert_eq!(
        backend_pid(&again).await,
        pid,
        "its own login still gets it"
    );
}

#[tokio::test]
async fn a_session_left_mid_transaction_after_a_cancel_or_ended_by_the_gateway_is_not_kept() {
    let gw = TestGateway::start_with(GatewayOptions {
        extra_server_toml: "idle_timeout = \"1s\"\n".into(),
        ..Default::default()
    })
    .await;
    let token = gw.token("warm-ends");

    // Left inside a transaction.
    let client = gw.connect("warm-ends", &token).await.unwrap();
    let mid_transaction = backend_pid(&client).await;
    client
        .batch_execute("BEGIN; CREATE TEMP TABLE half_done (x int)")
        .await
        .unwrap();
    drop(client);
    until_exited(mid_transaction, "the backend has exited").await;

    // Left at rest, but after a cancel that could still land on whatever runs next there.
    let client = gw.connect("warm-ends", &token).await.unwrap();
    let cancelled = backend_pid(&client).await;
    let cancel = client.cancel_token();
    let sleeping = tokio::spawn(async move {
        let result = client.simple_query("SELECT pg_sleep(20)").await;
        (client, result)
    });
    let superuser = postgres().server.superuser_client(DATABASE).await.unwrap();
    until("the sleep runs", async || {
        let rows = superuser
            .query(
                "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
                &[&cancelled],
            )
            .await
            .unwrap();
        !rows.is_empty()
    })
    .await;
    cancel
        .cancel_query(sluice_integration_tests::tls_connector())
        .await
        .unwrap();
    let (client, result) = sleeping.await.unwrap();
    assert_eq!(result.unwrap_err().code().unwrap().code(), "57014");
    client.batch_execute("SELECT 1").await.unwrap();
    drop(client);
    until_exited(cancelled, "the cancelled backend has exited").await;

    // Ended by the gateway (its idle timeout), at rest.
    let client = gw.connect("warm-ends", &token).await.unwrap();
    let idle = backend_pid(&client).await;
    until_exited(idle, "the idle session's backend has exited").await;
    drop(client);

    assert_eq!(warm(&gw), 0);
    let next = gw.connect("warm-ends", &token).await.unwrap();
    let pid = backend_pid(&next).await;
    assert!(![mid_transaction, cancelled, idle].contains(&pid));
    assert_eq!(taken(&gw), 0);
}

#[tokio::test]
async fn a_warm_connection_closes_after_its_idle_timeout_and_one_postgres_closed_is_passed_over() {
    let gw = TestGateway::start_with(GatewayOptions {
        extra_upstream_toml: "warm_idle_timeout = \"2s\"".into(),
        ..Default::default()
    })
    .await;
    let token = gw.token("warm-idle");
    let client = gw.connect("warm-idle", &token).await.unwrap();
    let expiring = backend_pid(&client).await;
    drop(client);
    until("the connection is kept warm", async || warm(&gw) == 1).await;
    until_exited(expiring, "the idle timeout closes it").await;
    assert_eq!(warm(&gw), 0);

    let gw = TestGateway::start().await;
    let token = gw.token("warm-killed");
    let client = gw.connect("warm-killed", &token).await.unwrap();
    let killed = backend_pid(&client).await;
    drop(client);
    until("the connection is kept warm", async || warm(&gw) == 1).await;
    let superuser = postgres().server.superuser_client(DATABASE).await.unwrap();
    superuser
        .execute("SELECT pg_terminate_backend($1)", &[&killed])
        .await
        .unwrap();
    until_exited(killed, "Postgres has closed it").await;

    let next = gw.connect("warm-killed", &token).await.unwrap();
    assert_ne!(backend_pid(&next).await, killed);
    next.batch_execute("SELECT 1").await.unwrap();
    assert_eq!(taken(&gw), 0, "the closed connection was not handed out");
}

#[tokio::test]
async fn psql_run_once_per_step_reuses_one_warm_backend() {
    let gw = TestGateway::start().await;
    let token = gw.token("warm-steps");
    let mut pids = Vec::new();
    for step in 0..3 {
        let out = gw
            .psql(
                "warm-steps",
                &token,
                "require",
                &["-Atc", "SELECT pg_backend_pid()"],
            )
            .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        pids.push(String::from_utf8(out.stdout).unwrap().trim().to_owned());
        let steps_done = step + 1;
        until("the connection is kept warm", async || {
            warm(&gw) == 1 && taken(&gw) == steps_done - 1
        })
        .await;
    }
    assert!(pids.iter().all(|pid| pid == &pids[0]), "{pids:?}");
    assert_eq!(taken(&gw), 2);
}

#[tokio::test]
async fn a_full_pool_closes_its_oldest_and_a_login_short_of_slots_closes_the_warm_ones() {
    const LIMITED: &str = "sluice_warm_limited";
    as_superuser(&format!(
        "DO $$ BEGIN
             IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{LIMITED}') THEN
                 CREATE ROLE {LIMITED} LOGIN PASSWORD 'limited-secret' CONNECTION LIMIT 1;
             END IF;
         END $$;"
    ))
    .await;
    let mut password = tempfile::NamedTempFile::new().unwrap();
    writeln!(password, "limited-secret").unwrap();
    let gw = TestGateway::start_with(GatewayOptions {
        extra_toml: format!(
            "url_user_for_unmapped = true\nwarm_connections = 1\n\
             [[upstream.roles]]\nname = \"{LIMITED}\"\ngroups = [\"limited\"]\npassword_file = \"{}\"\n",
            password.path().display()
        ),
        ..Default::default()
    })
    .await;

    // The pool holds one: the second connection parked closes the first.
    let first = gw
        .connect("warm-full", &gw.token("warm-full"))
        .await
        .unwrap();
    let second = gw
        .connect("warm-full", &gw.token("warm-full"))
        .await
        .unwrap();
    let (oldest, newest) = (backend_pid(&first).await, backend_pid(&second).await);
    drop(first);
    until("the first is kept warm", async || warm(&gw) == 1).await;
    drop(second);
    until_exited(oldest, "the oldest has made room").await;
    until("the newest is kept warm", async || warm(&gw) == 1).await;
    assert!(backend_alive(newest).await);

    // The mapped role may hold one connection, and a warm one of another token holds it.
    let limited = gw.token_with_groups("warm-limited", &["limited"]);
    let holder = gw.connect("warm-limited", &limited).await.unwrap();
    let held = backend_pid(&holder).await;
    drop(holder);
    until("the limited role's connection is kept warm", async || {
        backend_alive(held).await && !backend_alive(newest).await && warm(&gw) == 1
    })
    .await;
    let other = gw.token_with_groups("warm-limited", &["limited"]);
    let client = gw.connect("warm-limited", &other).await.unwrap();
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, LIMITED);
    assert_ne!(backend_pid(&client).await, held);
    assert!(!backend_alive(held).await, "the warm one made way");
    assert_eq!(warm(&gw), 0);
}

#[tokio::test]
async fn a_warm_connection_over_tls_moves_between_session_threads_and_stays_encrypted() {
    let gw = TestGateway::start_with(GatewayOptions {
        upstream_role: Roles::TLS_ONLY,
        upstream_tls: UpstreamTlsMode::Require,
        ..Default::default()
    })
    .await;
    let token = gw.token("warm-tls");
    let encrypted = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let mut pids = Vec::new();
    let mut occupier = None;
    for step in 0..3 {
        let client = gw.connect("warm-tls", &token).await.unwrap();
        pids.push(backend_pid(&client).await);
        let ssl: bool = client.query_one(encrypted, &[]).await.unwrap().get(0);
        assert!(ssl);
        client
            .batch_execute("BEGIN; SELECT count(*) FROM items; COMMIT")
            .await
            .unwrap();
        drop(client);
        until("the connection is kept warm", async || warm(&gw) == 1).await;
        // A session of another subject held open on the least busy session thread, then
        // let go: the next session of the token lands on the other thread than the last.
        occupier = match step {
            0 => Some(
                gw.connect("warm-occupier", &gw.token("warm-occupier"))
                    .await
                    .unwrap(),
            ),
            _ => None,
        };
    }
    drop(occupier);
    assert!(pids.iter().all(|pid| *pid == pids[0]), "{pids:?}");
    assert_eq!(taken(&gw), 2);
}

#[tokio::test]
async fn revoking_a_token_or_its_expiry_closes_its_warm_connections() {
    let gw = TestGateway::start().await;
    let admin = gw.token_with_groups("warm-admin", &["sluice-admins"]);

    let claims = gw.claims("warm-revoked", Duration::from_secs(300));
    let token = gw.sign(&claims);
    let client = gw.connect("warm-revoked", &token).await.unwrap();
    let revoked = backend_pid(&client).await;
    drop(client);
    until("the connection is kept warm", async || warm(&gw) == 1).await;
    let (code, view) = http(
        gw.admin,
        "POST",
        "/v1/revocations",
        Some(&admin),
        Some(&serde_json::json!({"jti": claims.jti, "reason": "leaked"}).to_string()),
    )
    .await;
    assert_eq!(code, 201, "{view}");
    until_exited(revoked, "the revoked token's backend has exited").await;
    assert_eq!(warm(&gw), 0);

    let short = gw.sign(&gw.claims("warm-expiring", Duration::from_secs(3)));
    let client = gw.connect("warm-expiring", &short).await.unwrap();
    let expiring = backend_pid(&client).await;
    drop(client);
    until("the connection is kept warm", async || warm(&gw) == 1).await;
    until_exited(expiring, "the expired token's backend has exited").await;
    assert_eq!(warm(&gw), 0, "closed before warm_idle_timeout (60 s)");
}
