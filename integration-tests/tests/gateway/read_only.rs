//! Read-only grants (`sluice token mint --read-only`, or an issuer's `read_only`): Postgres
//! itself runs the session read-only, so nothing writes even with no policy plugin loaded, and
//! no way of turning it off gets through — `SET`, `set_config`, `SET TRANSACTION`,
//! `SET SESSION CHARACTERISTICS`, `BEGIN READ WRITE`, code the parser cannot see into (DO,
//! CALL, user-defined functions), `pg_settings`, or text it cannot read.

use std::time::Duration;

use sluice_integration_tests::{DATABASE, TestGateway, error_message, sluice_binary, sqlstate};

#[tokio::test]
async fn a_read_only_grant_cannot_write_with_no_plugin_loaded_nor_turn_read_only_off() {
    let gw = TestGateway::start().await;
    let writer = gw.connect("writer", &gw.token("writer")).await.unwrap();
    writer
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS read_only_grant (id int); INSERT INTO read_only_grant VALUES (1)",
        )
        .await
        .unwrap();
    let token = gw
        .tokens
        .mint_read_only("reader", DATABASE, &[], Duration::from_secs(300))
        .unwrap();
    let reader = gw.connect("reader", &token).await.unwrap();
    reader
        .simple_query("SELECT count(*) FROM read_only_grant")
        .await
        .unwrap();
    let err = reader
        .batch_execute("INSERT INTO read_only_grant VALUES (2)")
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "25006",
        "Postgres refuses: {}",
        error_message(&err)
    );

    for sql in [
        "SET default_transaction_read_only = off",
        "SET transaction_read_only = false",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "BEGIN READ WRITE",
        "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
        "BEGIN; SET TRANSACTION READ WRITE",
    ] {
        let err = reader.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{sql}: {}", error_message(&err));
        assert!(
            error_message(&err).contains("read-only"),
            "{sql}: {}",
            error_message(&err)
        );
        // The session goes on, outside any transaction.
        reader.batch_execute("ROLLBACK").await.unwrap();
    }
    // What keeps it read-only is allowed, and changes nothing.
    reader
        .batch_execute("RESET default_transaction_read_only; BEGIN READ ONLY; SELECT 1; COMMIT")
        .await
        .unwrap();
    let err = reader
        .batch_execute("BEGIN; INSERT INTO read_only_grant VALUES (3)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "25006");
    reader.batch_execute("ROLLBACK").await.unwrap();

    // Code the parser cannot see into could turn it off and COMMIT before Postgres reports
    // anything: it does not run at all, nor does a write to pg_settings, nor text the parser
    // cannot read.
    for sql in [
        "DO $$ BEGIN PERFORM set_config('default_transaction_read_only', 'off', false); END $$",
        "DO $$ BEGIN SET default_transaction_read_only = off; COMMIT; \
         INSERT INTO read_only_grant VALUES (4); COMMIT; END $$",
        "CREATE PROCEDURE read_only_escape() LANGUAGE sql AS 'SELECT 1'",
        "UPDATE pg_settings SET setting = 'off' WHERE name = 'default_transaction_read_only'",
        "SELECT 1 FROM (",
    ] {
        let err = reader.batch_execute(sql).await.unwrap_err();
        assert!(
            matches!(sqlstate(&err).as_str(), "42501" | "42601" | "25006"),
            "{sql}: {}",
            error_message(&err)
        );
        reader.batch_execute("ROLLBACK").await.unwrap();
    }
    let err = reader.batch_execute("CALL anything()").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{}", error_message(&err));
    assert!(!reader.is_closed());
    let rows = writer
        .query("SELECT count(*) FROM read_only_grant", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 1, "nothing was written");

    // A grant that is not read-only still writes.
    writer
        .batch_execute("DELETE FROM read_only_grant WHERE id = 1")
        .await
        .unwrap();
}

#[tokio::test]
async fn psql_with_a_break_glass_token_minted_read_only_cannot_write_and_its_session_names_the_minter()
 {
    let gw = TestGateway::start().await;
    let out = std::process::Command::new(sluice_binary())
        .args(["token", "mint", "--config"])
        .arg(&gw.config_path)
        .args([
            "--subject",
            "analyst",
            "--database",
            DATABASE,
            "--read-only",
            "--reason",
            "INC-42: the exchange is down",
        ])
        .env("USER", "oncall")
        .env_remove("SUDO_USER")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let out = gw
        .psql(
            "analyst",
            token.trim(),
            "require",
            &[
                "-c",
                "SHOW default_transaction_read_only",
                "-c",
                "CREATE TABLE psql_ro (id int)",
            ],
        )
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains(" on"), "{stdout}");
    assert!(!out.status.success());
    assert!(stderr.contains("read-only transaction"), "{stderr}");
    // Break-glass: the session is recorded as opened with the operator's minted token.
    let start = gw.audit_record("session_start").await;
    assert!(
        start["minted"]["by"]
            .as_str()
            .unwrap()
            .starts_with("oncall"),
        "{start}"
    );
    assert_eq!(start["minted"]["reason"], "INC-42: the exchange is down");
}
