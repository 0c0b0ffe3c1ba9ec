//! Who the database sees: a session whose token carries a group mapped to a role
//! (`[[upstream.roles]]`) logs in upstream as that role, so `current_user`, Postgres' own
//! privileges and its logs see it — not the gateway's role — and it cannot switch back, since
//! it is the session's own login, not a `SET ROLE` code could undo.

use std::io::Write;

use sluice_integration_tests::{
    DATABASE, GatewayOptions, Roles, TestGateway, error_message, postgres, sqlstate,
};

const READER: &str = "sluice_mapped_reader";

#[tokio::test]
async fn a_mapped_group_logs_in_as_its_role_and_postgres_enforces_that_role() {
    let pg = postgres();
    let admin = pg.server.superuser_client(DATABASE).await.unwrap();
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER}') THEN
                     CREATE ROLE {READER} LOGIN PASSWORD 'reader-secret';
                 END IF;
             END $$;
             CREATE TABLE IF NOT EXISTS mapped_ledger (id int);
             REVOKE ALL ON mapped_ledger FROM PUBLIC;
             GRANT SELECT ON mapped_ledger TO {READER};"
        ))
        .await
        .unwrap();
    let mut password = tempfile::NamedTempFile::new().unwrap();
    writeln!(password, "reader-secret").unwrap();
    let gw = TestGateway::start_with(GatewayOptions {
        extra_toml: format!(
            "url_user_for_unmapped = true\n{}",
            roles_toml(password.path())
        ),
        ..GatewayOptions::default()
    })
    .await;

    let reader = gw
        .connect(
            "ana",
            &gw.token_with_groups("ana", &["analysts", "readers"]),
        )
        .await
        .unwrap();
    let row = reader
        .query_one("SELECT current_user::text, session_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), READER);
    assert_eq!(row.get::<_, String>(1), READER);
    reader
        .simple_query("SELECT count(*) FROM mapped_ledger")
        .await
        .unwrap();
    let err = reader
        .batch_execute("INSERT INTO mapped_ledger VALUES (1)")
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "42501",
        "Postgres refuses: {}",
        error_message(&err)
    );
    // Back to the gateway's own role: not a member, so Postgres refuses.
    let err = reader
        .batch_execute(&format!("SET ROLE {}", Roles::SCRAM))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{}", error_message(&err));
    let err = reader
        .batch_execute(
            "DO $$ BEGIN EXECUTE 'SET ROLE NONE'; INSERT INTO mapped_ledger VALUES (2); END $$",
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{}", error_message(&err));

    // A token without a mapped group logs in as the URL's user.
    let other = gw.connect("bob", &gw.token("bob")).await.unwrap();
    let row = other
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), Roles::SCRAM);
    let rows = admin
        .query("SELECT count(*) FROM mapped_ledger", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 0, "nothing was written");

    // By default a token no role is mapped to (one that dropped its groups, say) is refused
    // rather than given the gateway's own role.
    let strict = TestGateway::start_with(GatewayOptions {
        extra_toml: roles_toml(password.path()),
        ..GatewayOptions::default()
    })
    .await;
    let err = strict
        .connect("bob", &strict.token("bob"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{}", error_message(&err));
    let mapped = strict
        .connect("ana", &strict.token_with_groups("ana", &["readers"]))
        .await
        .unwrap();
    mapped.simple_query("SELECT 1").await.unwrap();
}

fn roles_toml(password_file: &std::path::Path) -> String {
    format!(
        "[[upstream.roles]]\nname = \"{READER}\"\ngroups = [\"readers\"]\npassword_file = \"{}\"\n",
        password_file.display()
    )
}
