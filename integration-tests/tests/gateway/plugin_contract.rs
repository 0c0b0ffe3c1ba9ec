//! The plugin contract as components see it: a plugin built against 0.1.1 reads, through the
//! `catalog` import, which functions of a statement are user-defined and volatile, as the
//! database's catalog declares them (one it does not know yet counting as both); a component built against 0.1.0, before that import
//! existed, keeps serving unchanged.

use sluice_integration_tests::{
    DATABASE, GatewayOptions, PluginSpec, TestGateway, error_message, postgres, sqlstate,
};

#[tokio::test]
async fn plugins_see_which_functions_are_user_defined_and_volatile() {
    let admin = postgres()
        .server
        .superuser_client(DATABASE)
        .await
        .expect("superuser connects");
    admin
        .batch_execute(
            "CREATE OR REPLACE FUNCTION scratch.catalog_volatile() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 1';
             CREATE OR REPLACE FUNCTION scratch.catalog_stable() RETURNS int LANGUAGE sql STABLE AS 'SELECT 2';
             GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA scratch TO PUBLIC;",
        )
        .await
        .unwrap();
    let gw = TestGateway::start_with(GatewayOptions {
        plugins: vec![PluginSpec::stock("test-catalog")],
        ..GatewayOptions::default()
    })
    .await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();

    let refused = client
        .simple_query("SELECT scratch.catalog_volatile(), scratch.catalog_stable(), lower('A')")
        .await
        .expect_err("the test plugin refuses every call of a function");
    assert_eq!(sqlstate(&refused), "42501");
    assert!(
        error_message(&refused).ends_with(
            "catalog says scratch.catalog_volatile: user-defined volatile, scratch.catalog_stable: user-defined, lower: built-in"
        ),
        "{}",
        error_message(&refused)
    );
    // The same through the extended protocol, where the statement is judged at its Parse.
    let refused = client
        .query("SELECT scratch.catalog_stable() + $1::int", &[&1i32])
        .await
        .expect_err("refused at Parse");
    assert!(
        error_message(&refused).ends_with("catalog says scratch.catalog_stable: user-defined"),
        "{}",
        error_message(&refused)
    );
    // No function, nothing to say.
    client.simple_query("SELECT 1").await.unwrap();

    // A function created after the gateway read the catalog is not taken for a built-in, nor
    // for a harmless one: until the catalog is read again it counts as user-defined and
    // volatile (it may have been created in the very transaction that calls it).
    admin
        .batch_execute(
            "CREATE OR REPLACE FUNCTION scratch.catalog_late() RETURNS int LANGUAGE sql STABLE AS 'SELECT 3';
             GRANT EXECUTE ON FUNCTION scratch.catalog_late() TO PUBLIC;",
        )
        .await
        .unwrap();
    let refused = client
        .simple_query("SELECT scratch.catalog_late()")
        .await
        .expect_err("refused");
    assert!(
        error_message(&refused)
            .ends_with("catalog says scratch.catalog_late: user-defined volatile"),
        "{}",
        error_message(&refused)
    );
}

#[tokio::test]
async fn a_component_built_against_contract_0_1_0_keeps_serving() {
    let gw = TestGateway::start_with(GatewayOptions {
        plugins: vec![PluginSpec::with(
            "first-contract",
            "test-contract-0-1-0",
            "[config]\nreason = \"the 0.1.0 plugin says no\"\n",
        )],
        ..GatewayOptions::default()
    })
    .await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let rows = client
        .query("SELECT count(*) FROM items", &[])
        .await
        .unwrap();
    assert!(rows[0].get::<_, i64>(0) >= 100);
    let refused = client
        .batch_execute("CREATE TABLE first_contract_table (id int)")
        .await
        .expect_err("a schema change is refused by the 0.1.0 component");
    assert_eq!(sqlstate(&refused), "42501");
    assert!(
        error_message(&refused).contains("\"first-contract\": the 0.1.0 plugin says no"),
        "{}",
        error_message(&refused)
    );
    let exists: bool = postgres()
        .server
        .superuser_client(DATABASE)
        .await
        .unwrap()
        .query_one(
            "SELECT to_regclass('public.first_contract_table') IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!exists, "nothing ran");
}
