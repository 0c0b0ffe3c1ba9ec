//! `sluice demo`: a throwaway Postgres with sample data, a gateway in front of it with TLS on
//! both legs, a 15-minute token and the psql line to paste.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use sluice::config::Config;
use sluice::identity::{SigningKey, TokenAuthority};
use sluice::localpg::{LocalPostgres, LocalPostgresOptions};
use sluice::proxy::{Gateway, Shared};
use tokio::signal::unix::{SignalKind, signal};

const SAMPLE_DATA: &str = r#"
CREATE TABLE customers (
    id          serial PRIMARY KEY,
    name        text NOT NULL,
    email       text NOT NULL UNIQUE,
    phone       text,
    card_number text
);
CREATE TABLE orders (
    id          serial PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers(id),
    amount      numeric(10,2) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO customers (name, email, phone, card_number) VALUES
    ('Ada Lovelace',   'ada@example.com',    '+44 20 7946 0958', '4111111111111111'),
    ('Alan Turing',    'alan@example.com',   '+44 161 496 0735', '5500005555555559'),
    ('Grace Hopper',   'grace@example.com',  '+1 202 555 0143',  '340000000000009'),
    ('Edsger Dijkstra','edsger@example.com', '+31 20 794 0101',  '6011000000000004'),
    ('Barbara Liskov', 'barbara@example.com','+1 617 555 0199',  '4012888888881881');
INSERT INTO orders (customer_id, amount)
    SELECT 1 + (i % 5), round((random() * 500)::numeric, 2) FROM generate_series(1, 50) AS i;
"#;

/// Manifests for the stock plugins the demo loads.
const DEMO_PLUGINS: &[(&str, &str)] = &[
    ("no-ddl", "priority = 10\n"),
    ("guard-roles", "priority = 20\n"),
    ("guard-functions", "priority = 30\n"),
    ("safe-writes", "priority = 40\n"),
    (
        "read-only",
        "priority = 50\n[config]\ngroups = \"readers\"\n",
    ),
    ("approve-writes", "priority = 60\n"),
    (
        "route-by-table",
        "[config]\nrules = \"public.customers -> ask groups=pii-approvers timeout=10m\"\n",
    ),
    (
        "mask-pii-columns",
        "[config]\nrules = \"customers.email=hash, customers.card_number=partial(0,4), customers.phone=redact\"\nexempt_groups = \"pii-readers\"\n",
    ),
];

pub async fn run(port: Option<u16>, plugins: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    eprintln!("starting a throwaway Postgres...");
    let pg = tokio::task::spawn_blocking(|| LocalPostgres::start(&LocalPostgresOptions::default()))
        .await?
        .context("starting Postgres for the demo")?;

    let gw_password = uuid::Uuid::new_v4().simple().to_string();
    let admin = pg.superuser_client("postgres").await?;
    admin
        .batch_execute(&format!(
            "CREATE ROLE sluice_gw LOGIN PASSWORD '{gw_password}'"
        ))
        .await
        .context("creating the demo role")?;
    admin
        .batch_execute("CREATE DATABASE app")
        .await
        .context("creating the demo database")?;
    let app = pg.superuser_client("app").await?;
    app.batch_execute(SAMPLE_DATA)
        .await
        .context("loading sample data")?;
    app.batch_execute(
        "GRANT ALL ON ALL TABLES IN SCHEMA public TO sluice_gw;
         GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO sluice_gw;
         GRANT CREATE ON SCHEMA public TO sluice_gw;",
    )
    .await?;
    drop((admin, app));

    // The gateway's files live apart from Postgres's: the scratch directory belongs to the
    // postgres user, and the gateway refuses a plugin directory another user could replace.
    let gateway_dir = tempfile::Builder::new()
        .prefix("sluice-demo-")
        .tempdir()
        .context("creating the demo's directory")?;
    let dir = gateway_dir.path().to_path_buf();
    SigningKey::generate()?.write_new(&dir.join("signing.pem"))?;
    sluice::tls::write_private(&dir.join("upstream.password"), &gw_password)?;
    let listen = pick_listen_addr(port)?;
    let admin_listen = SocketAddr::from(([127, 0, 0, 1], sluice::localpg::free_port()?));
    let mcp_listen = SocketAddr::from(([127, 0, 0, 1], sluice::localpg::free_port()?));
    let plugins_toml = match &plugins {
        Some(from) => {
            let to = dir.join("plugins.d");
            std::fs::create_dir_all(&to)?;
            // Writable by nobody but us whatever the umask: the gateway refuses a plugin
            // directory others may write.
            let owner_only = |path: &Path, mode: u32| {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            };
            owner_only(&to, 0o755)?;
            for (name, manifest) in DEMO_PLUGINS {
                let wasm = from.join(format!("{name}.wasm"));
                let installed = to.join(format!("{name}.wasm"));
                std::fs::copy(&wasm, &installed)
                    .with_context(|| format!("demo plugin {}", wasm.display()))?;
                owner_only(&installed, 0o644)?;
                let manifest_path = to.join(format!("{name}.toml"));
                std::fs::write(&manifest_path, manifest)?;
                owner_only(&manifest_path, 0o644)?;
            }
            // The guards must be serving: a deleted or broken one refuses every statement.
            "[plugins]\ndir = \"./plugins.d\"\nrequired = [\"no-ddl\", \"guard-roles\", \"guard-functions\", \"safe-writes\", \"approve-writes\"]\n".to_owned()
        }
        None => String::new(),
    };
    let config_path = dir.join("sluice.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"[server]
listen = "{listen}"
data_dir = "./data"
[tls]
mode = "require"
[identity]
signing_key = "./signing.pem"
max_ttl = "1h"
[[upstream]]
database = "app"
url = "postgres://sluice_gw@127.0.0.1:{pg_port}/app"
password_file = "./upstream.password"
tls = "require"
[admin]
listen = "{admin_listen}"
[mcp]
listen = "{mcp_listen}"
authorization_server = "http://{admin_listen}"
{plugins_toml}"#,
            pg_port = pg.port()
        ),
    )?;
    let config = Config::load(&config_path)?;
    let tokens = TokenAuthority::from_config(&config.identity)?;
    let mcp_config = config.mcp.clone();
    let services = sluice::services::Services::build(config)?;
    let admin_state = std::sync::Arc::new(sluice::admin::AdminState::for_services(&services));
    let mcp_verifiers = sluice::mcp::GatewayParts::of(&services);
    let gateway = Gateway::start(Shared::from_services(services)).await?;
    let admin_stop = tokio_util::sync::CancellationToken::new();
    sluice::admin::serve(admin_listen, admin_state, admin_stop.clone())
        .await
        .with_context(|| format!("admin listener on {admin_listen}"))?;
    let mcp_state =
        sluice::mcp::McpState::new(&mcp_config, mcp_listen, mcp_verifiers, gateway.local_door());
    sluice::mcp::serve(
        mcp_listen,
        std::sync::Arc::new(mcp_state),
        admin_stop.clone(),
    )
    .await
    .with_context(|| format!("MCP listener on {mcp_listen}"))?;
    let _admin_stop = admin_stop.drop_guard();
    let addr = gateway.local_addr();
    let approver = tokens.mint(
        "demo-approver",
        "app",
        &["approvers".into(), "pii-approvers".into()],
        Duration::from_secs(60 * 60),
    )?;
    let token = tokens.mint(
        "demo-agent",
        "app",
        &["demo".into()],
        Duration::from_secs(15 * 60),
    )?;

    let binary = std::env::current_exe().context("locating the sluice binary")?;
    let bin_dir = binary
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let config = config_path.display();
    println!(
        "\nSluice is listening on {addr}, in front of a throwaway Postgres on port {pg_port}.\n\
         {loaded}\n\n\
         The sluice binary is {binary}. For this shell (or: cargo install --path host):\n\n  \
         export PATH=\"{bin_dir}:$PATH\"\n\n\
         Connect as demo-agent (the token is valid for 15 minutes):\n\n  \
         export PGPASSWORD='{token}'\n  \
         psql \"host={host} port={port} user=demo-agent dbname=app sslmode=require\"\n\n\
         Or as an MCP server (tools query, list_tables, describe_table, explain; same guard, same\n\
         token): paste into your MCP client's configuration (Claude Code: .mcp.json):\n\n\
         {mcp_json}\n\n\
         Decide held statements on the approver page, http://{admin_listen}/approvals\n\
         (paste the approver token below), or from another terminal, as demo-approver (valid 1 hour):\n\n  \
         export SLUICE_TOKEN='{approver}'\n  \
         sluice approvals list --config {config}\n  \
         sluice approvals approve <id> --config {config}\n\n\
         Read the audit log (add --follow to keep watching) and check its integrity:\n\n  \
         sluice audit tail --config {config}\n  \
         sluice audit verify --config {config}\n\n\
         Mint another agent token:\n\n  \
         sluice token mint --config {config} --subject demo-agent --database app --ttl 15m\n\n\
         Press Ctrl-C to stop; everything is removed.",
        binary = binary.display(),
        pg_port = pg.port(),
        mcp_json = mcp_client_config(mcp_listen, &token),
        loaded = if plugins.is_some() {
            "Policy plugins loaded: no-ddl, guard-roles, guard-functions, safe-writes, read-only, approve-writes;\n\
             approval plugin route-by-table (writes touching customers go to group pii-approvers);\n\
             masking plugin mask-pii-columns (customers: email hashed, card_number partial, phone redacted).\n\
             Try: SELECT * FROM customers;  SELECT upper(email) FROM customers;  COPY customers TO STDOUT;\n\
             Also try: DROP TABLE orders;  UPDATE customers SET name = 'x';  SELECT pg_read_file('/etc/passwd');\n\
             A write with a WHERE clause waits for approval: psql shows the request id."
        } else {
            "No policy plugins (run `cargo xtask demo` to load the stock ones)."
        },
        host = addr.ip(),
        port = addr.port(),
    );
    // Whoever reads the printed lines through a pipe (a test) gets them now.
    use std::io::Write;
    let _ = std::io::stdout().flush();

    // Ctrl-C, `kill`, or the terminal closing: the gateway says goodbye to its clients (FATAL
    // 57P01), then the demo's Postgres (in a session of its own, so the terminal's signal did
    // not reach it) stops and its files are removed.
    let mut term = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
        _ = hangup.recv() => {}
    }
    eprintln!("stopping...");
    gateway.shutdown(Duration::from_secs(2)).await;
    drop(gateway);
    drop(pg);
    drop(gateway_dir);
    Ok(())
}

fn pick_listen_addr(port: Option<u16>) -> anyhow::Result<SocketAddr> {
    if let Some(port) = port {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    // The documented default port when it is free, any free port otherwise.
    let preferred = SocketAddr::from(([127, 0, 0, 1], 6433));
    if std::net::TcpListener::bind(preferred).is_ok() {
        return Ok(preferred);
    }
    Ok(SocketAddr::from((
        [127, 0, 0, 1],
        sluice::localpg::free_port()?,
    )))
}

/// The `mcpServers` entry an MCP client (Claude Code's `.mcp.json`, Cursor's `mcp.json`) for a Streamable HTTP server with a bearer token, indented for pasting.
fn mcp_client_config(listen: SocketAddr, token: &str) -> String {
    // Written out rather than serialized, to keep the keys in the order people read them; a
    // token is base64url, nothing in it needs escaping.
    format!(
        r#"  {{
    "mcpServers": {{
      "sluice": {{
        "type": "http",
        "url": "http://{listen}/mcp",
        "headers": {{ "Authorization": "Bearer {token}" }}
      }}
    }}
  }}"#
    )
}
