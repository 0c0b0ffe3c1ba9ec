//! The plugin directory cannot be emptied or poisoned: a required plugin that is not serving
//! refuses every statement (naming it), a file that does not match its world never replaces a
//! working version, the directory's files must be the gateway's own and inside it, and what a
//! plugin says is bounded and escaped before it reaches clients.

use std::os::unix::fs::PermissionsExt;

use sluice_integration_tests::{
    DATABASE, GatewayOptions, PluginSpec, TestGateway, built_plugin, error_message, postgres,
    sqlstate,
};

/// Rows of `items` with `id`, read straight from Postgres (the gateway may refuse everything).
async fn rows_in_postgres(id: i32) -> i64 {
    let client = postgres().server.superuser_client(DATABASE).await.unwrap();
    client
        .query_one("SELECT count(*) FROM items WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0)
}

async fn simple(gw: &TestGateway, sql: &str) -> Result<(), tokio_postgres::Error> {
    let client = gw.connect("agent", &gw.token("agent")).await?;
    client.simple_query(sql).await.map(drop)
}

fn status_of(gw: &TestGateway, name: &str) -> sluice::plugins::PluginStatus {
    gw.plugins
        .as_ref()
        .unwrap()
        .status()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("a status for {name}"))
}

#[tokio::test]
async fn a_required_plugin_missing_or_broken_at_start_refuses_every_statement_naming_it() {
    let gw = TestGateway::start_with(GatewayOptions {
        plugins: vec![PluginSpec::stock("approve-writes")],
        extra_plugins_toml: "required = [\"no-ddl\"]".into(),
        ..GatewayOptions::default()
    })
    .await;
    // A truncated file under the required name: it fails to load and nothing was serving.
    let truncated = gw.plugin_dir().join("no-ddl.wasm");
    std::fs::write(
        &truncated,
        &std::fs::read(built_plugin("no-ddl")).unwrap()[..64],
    )
    .unwrap();
    gw.reload_plugins().await;
    for sql in ["SELECT 1", "INSERT INTO items VALUES (7100, 'unguarded')"] {
        let e = simple(&gw, sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}");
        let message = error_message(&e);
        assert!(
            message.contains("no-ddl") && message.contains("required plugin"),
            "{message}"
        );
    }
    assert_eq!(rows_in_postgres(7100).await, 0);
    assert!(status_of(&gw, "no-ddl").error.is_some());

    // The real file arrives: statements are judged again.
    PluginSpec::stock("no-ddl").install(&gw.plugin_dir());
    gw.reload_plugins().await;
    simple(&gw, "SELECT 1").await.unwrap();
    let e = simple(&gw, "CREATE TABLE escaped (id int)")
        .await
        .unwrap_err();
    assert!(
        error_message(&e).contains("no-ddl"),
        "{}",
        error_message(&e)
    );
}

#[tokio::test]
async fn removing_a_required_plugin_with_its_manifest_refuses_statements_until_it_is_back() {
    let gw = TestGateway::start_with(GatewayOptions {
        plugins: vec![
            PluginSpec::with("no-ddl", "no-ddl", "required = true\n"),
            PluginSpec::stock("approve-writes"),
        ],
        ..GatewayOptions::default()
    })
    .await;
    simple(&gw, "SELECT 1").await.unwrap();
    // A client connected before the removal is refused too, and a statement it prepared.
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    let prepared = client.prepare("SELECT 2").await.unwrap();

    // Corrupted: the version serving keeps guarding.
    let file = gw.plugin_dir().join("no-ddl.wasm");
    std::fs::write(&file, b"not a component").unwrap();
    gw.reload_plugins().await;
    simple(&gw, "SELECT 1").await.unwrap();
    assert!(status_of(&gw, "no-ddl").serving.is_some());

    // Removed, manifest and all: the requirement was remembered.
    std::fs::remove_file(&file).unwrap();
    std::fs::remove_file(gw.plugin_dir().join("no-ddl.toml")).unwrap();
    gw.reload_plugins().await;
    let e = simple(&gw, "SELECT 1").await.unwrap_err();
    assert!(
        error_message(&e).contains("\"no-ddl\""),
        "{}",
        error_message(&e)
    );
    let e = client.query(&prepared, &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert_eq!(
        status_of(&gw, "no-ddl").error.as_deref(),
        Some("required, and there is no such file")
    );

    PluginSpec::stock("no-ddl").install(&gw.plugin_dir());
    gw.reload_plugins().await;
    simple(&gw, "SELECT 1").await.unwrap();
    assert_eq!(client.query(&prepared, &[]).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_component_that_does_not_match_its_world_never_replaces_a_working_version() {
    let gw = TestGateway::start_with(GatewayOptions {
        plugins: vec![PluginSpec::with("guard", "no-ddl", "")],
        ..GatewayOptions::default()
    })
    .await;
    let serving = status_of(&gw, "guard").serving.unwrap();
    // Exports the policy interface by name, with other function types.
    std::fs::copy(
        built_plugin("test-wrong-shape"),
        gw.plugin_dir().join("guard.wasm"),
    )
    .unwrap();
    gw.reload_plugins().await;
    let status = status_of(&gw, "guard");
    assert_eq!(status.serving.as_deref(), Some(serving.as_str()));
    let error = status.error.unwrap();
    // Its export names match: only instantiating it against the contract tells.
    assert!(error.contains("cannot be instantiated"), "{error}");
    let e = simple(&gw, "CREATE TABLE unguarded (id int)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "the working version still guards");
}

#[tokio::test]
async fn the_directory_refuses_links_out_files_others_can_write_and_unsafe_names() {
    let gw = TestGateway::start_with(GatewayOptions {
        plugins: vec![PluginSpec::stock("no-ddl")],
        ..GatewayOptions::default()
    })
    .await;
    let dir = gw.plugin_dir();
    let deny = built_plugin("test-faults");
    // A link to a component outside the directory.
    let outside = dir.parent().unwrap().join("outside.wasm");
    std::fs::copy(&deny, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("linked.wasm")).unwrap();
    // A component anyone may overwrite.
    let open = dir.join("open.wasm");
    std::fs::copy(&deny, &open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
    // A name that would forge a line in the gateway's log.
    std::fs::copy(&deny, dir.join("forged\nERROR everything is fine.wasm")).unwrap();
    gw.reload_plugins().await;

    let host = gw.plugins.clone().unwrap();
    let statuses = host.status();
    let error_of = |name: &str| {
        statuses
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.error.clone())
            .unwrap_or_else(|| panic!("{name} is refused"))
    };
    assert!(error_of("linked").contains("leads out of the plugin directory"));
    assert!(error_of("open").contains("writable by others"));
    assert!(error_of("forged\\u{000A}ERROR everything is fine").contains("only letters"));
    assert_eq!(
        host.current().policies.len(),
        1,
        "only no-ddl serves: {statuses:?}"
    );

    // A directory others may write is refused whole; what was serving goes on.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let reload = {
        let host = host.clone();
        tokio::task::spawn_blocking(move || host.reload())
            .await
            .unwrap()
    };
    let error = reload.unwrap_err().to_string();
    assert!(error.contains("writable by others"), "{error}");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = simple(&gw, "CREATE TABLE unguarded (id int)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
}

#[tokio::test]
async fn a_plugins_reason_reaches_the_client_bounded_and_escaped() {
    let gw = TestGateway::start_with(GatewayOptions {
        plugins: vec![PluginSpec::with(
            "loud",
            "test-faults",
            "[config]\nmode = \"deny-long\"\n[limits]\ntimeout = \"2s\"\nmemory_mib = 128\n",
        )],
        ..GatewayOptions::default()
    })
    .await;
    let e = simple(&gw, "SELECT 1").await.unwrap_err();
    let message = error_message(&e);
    assert!(
        message.len() < 2_000,
        "{} bytes reached the client",
        message.len()
    );
    assert!(
        message.contains("\\u{001B}[2K\\u{000A}FORGED") && !message.contains('\n'),
        "{message}"
    );
    assert!(message.ends_with("[cut]"), "{message}");
}

/// A component of `n` empty functions: small on disk, costly to compile.
fn function_bomb(n: u32) -> Vec<u8> {
    use wasm_encoder::{
        CodeSection, Component, Function, FunctionSection, Instruction, Module, ModuleSection,
        TypeSection,
    };
    let mut module = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], []);
    module.section(&types);
    let mut functions = FunctionSection::new();
    let mut code = CodeSection::new();
    let mut body = Function::new([]);
    body.instruction(&Instruction::End);
    for _ in 0..n {
        functions.function(0);
        code.function(&body);
    }
    module.section(&functions);
    module.section(&code);
    let mut component = Component::new();
    component.section(&ModuleSection(&module));
    component.finish()
}

#[tokio::test]
async fn a_component_too_costly_to_compile_is_refused_before_the_compiler_sees_it() {
    let gw = TestGateway::start_with(GatewayOptions {
        plugins: vec![PluginSpec::stock("no-ddl")],
        extra_plugins_toml: "max_functions = 10000".into(),
        ..GatewayOptions::default()
    })
    .await;
    let bomb = function_bomb(200_000);
    assert!(bomb.len() < 2 << 20, "small on disk: {} bytes", bomb.len());
    std::fs::write(gw.plugin_dir().join("bomb.wasm"), &bomb).unwrap();
    let started = std::time::Instant::now();
    gw.reload_plugins().await;
    let error = status_of(&gw, "bomb").error.unwrap();
    assert!(
        error.contains("more than 10000 functions") && error.contains("max_functions"),
        "{error}"
    );
    eprintln!(
        "a 200,000-function component refused in {:?}",
        started.elapsed()
    );
    let e = simple(&gw, "CREATE TABLE unguarded (id int)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "no-ddl still serves");
}
