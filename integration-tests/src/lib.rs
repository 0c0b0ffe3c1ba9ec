//! Test harness: one throwaway Postgres per test binary (started on first use), and a gateway
//! per test in front of it, driven with tokio-postgres and the real psql.

pub mod idp;
pub mod mcp;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

use sluice::admin::AdminState;
use sluice::config::{Config, UpstreamTlsMode};
use sluice::identity::{Claims, SigningKey, TokenAuthority};
use sluice::localpg::{LocalPostgres, LocalPostgresOptions};
use sluice::proxy::{Gateway, Shared};

/// The database clients ask for through the gateway.
pub const DATABASE: &str = "app";

/// Upstream roles, one per authentication method the gateway must handle.
pub struct Roles;
impl Roles {
    /// SCRAM-SHA-256 (the default method).
    pub const SCRAM: &'static str = "sluice_gw";
    pub const MD5: &'static str = "gw_md5";
    pub const CLEARTEXT: &'static str = "gw_plain";
    pub const TRUST: &'static str = "gw_trust";
    /// Refused by pg_hba.conf unless the connection uses TLS.
    pub const TLS_ONLY: &'static str = "gw_tls";
}

/// The shared Postgres of this test binary, with its roles and the `app` database.
pub struct TestPostgres {
    pub server: LocalPostgres,
    /// Password of every upstream role.
    pub role_password: String,
}

/// Starts (once) and returns this binary's Postgres. Panics with the reason (e.g. how to install
/// Postgres) when it cannot start: a missing prerequisite fails the suite, never skips it.
pub fn postgres() -> &'static TestPostgres {
    static PG: OnceLock<TestPostgres> = OnceLock::new();
    PG.get_or_init(|| {
        std::thread::spawn(start_postgres)
            .join()
            .expect("postgres setup thread panicked")
            .unwrap_or_else(|e| panic!("cannot start the test Postgres: {e:#}"))
    })
}

fn start_postgres() -> anyhow::Result<TestPostgres> {
    let options = LocalPostgresOptions {
        hba_lines: vec![
            format!("host all {} 127.0.0.1/32 md5", Roles::MD5),
            format!("host all {} 127.0.0.1/32 password", Roles::CLEARTEXT),
            format!("host all {} 127.0.0.1/32 trust", Roles::TRUST),
            format!("hostnossl all {} 127.0.0.1/32 reject", Roles::TLS_ONLY),
        ],
        // The load test holds a thousand sessions, each with its own upstream connection.
        settings: vec![("max_connections".into(), "1100".into())],
    };
    let server = LocalPostgres::start(&options)?;
    let role_password = uuid_like();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let admin = server.superuser_client("postgres").await?;
        let p = &role_password;
        admin
            .batch_execute(&format!(
                "CREATE ROLE {scram} LOGIN PASSWORD '{p}';
                 SET password_encryption = 'md5';
                 CREATE ROLE {md5} LOGIN PASSWORD '{p}';
                 RESET password_encryption;
                 CREATE ROLE {plain} LOGIN PASSWORD '{p}';
                 CREATE ROLE {trust} LOGIN;
                 CREATE ROLE {tls} LOGIN PASSWORD '{p}';",
                scram = Roles::SCRAM,
                md5 = Roles::MD5,
                plain = Roles::CLEARTEXT,
                trust = Roles::TRUST,
                tls = Roles::TLS_ONLY,
            ))
            .await?;
        admin.batch_execute("CREATE DATABASE app").await?;
        let app = server.superuser_client(DATABASE).await?;
        // Every scenario of a binary shares these tables: `items` is seeded with ids 1..=100,
        // tests that write to it use ids of their own above 1000, and a test that counts the
        // seed counts `WHERE id <= 100`.
        app.batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
             INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 100) i;
             GRANT ALL ON SCHEMA public TO PUBLIC;
             GRANT ALL ON ALL TABLES IN SCHEMA public TO PUBLIC;
             CREATE SCHEMA billing;
             CREATE TABLE billing.invoices (id int PRIMARY KEY, amount int NOT NULL);
             CREATE SCHEMA scratch;
             CREATE TABLE scratch.notes (id int PRIMARY KEY, body text);
             GRANT ALL ON SCHEMA billing, scratch TO PUBLIC;
             GRANT ALL ON ALL TABLES IN SCHEMA billing, scratch TO PUBLIC;",
        )
        .await?;
        anyhow::Ok(())
    })?;
    Ok(TestPostgres {
        server,
        role_password,
    })
}

fn uuid_like() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// How a test gateway is set up.
#[derive(Clone)]
pub struct GatewayOptions {
    pub upstream_role: &'static str,
    pub upstream_tls: UpstreamTlsMode,
    /// `require` or `prefer`.
    pub client_tls: &'static str,
    pub max_ttl: Duration,
    pub shutdown_grace: Duration,
    pub extra_server_toml: String,
    /// Replaces the default `ca_file` line of the upstream.
    pub extra_upstream_toml: String,
    /// Appended to the config, e.g. more `[[upstream]]` tables.
    pub extra_toml: String,
    /// Plugins to install: (file name without .wasm, built plugin to copy, manifest TOML).
    pub plugins: Vec<PluginSpec>,
    /// Lines added to `[plugins]` (with `plugins` given).
    pub extra_plugins_toml: String,
    /// Where the admin listener binds (default: a free loopback port); a test that must name
    /// the address in the config (a sign-in redirect URL) picks one with [`free_port`].
    pub admin_addr: Option<std::net::SocketAddr>,
    /// Where the upstream is reached, when not at the test Postgres itself (a relay before it).
    pub upstream_port: Option<u16>,
    /// Serve the MCP front door too (on a free loopback port; `[mcp]` settings in
    /// `extra_toml`).
    pub mcp: bool,
    /// Where the MCP front door listens instead (off loopback it serves HTTPS).
    pub mcp_listen: Option<std::net::SocketAddr>,
}

/// One plugin file in a test gateway's plugin directory.
#[derive(Clone)]
pub struct PluginSpec {
    /// Name in the plugin directory (`<name>.wasm`, `<name>.toml`).
    pub name: String,
    /// Which built plugin crate to copy (`no-ddl`, `test-faults`...).
    pub source: &'static str,
    /// Manifest text; empty for none.
    pub manifest: String,
}

impl PluginSpec {
    /// `source` installed under its own name without a manifest.
    pub fn stock(source: &'static str) -> PluginSpec {
        PluginSpec {
            name: source.to_owned(),
            source,
            manifest: String::new(),
        }
    }

    /// `source` installed as `name` with `manifest`.
    pub fn with(name: &str, source: &'static str, manifest: &str) -> PluginSpec {
        PluginSpec {
            name: name.to_owned(),
            source,
            manifest: manifest.to_owned(),
        }
    }

    /// Writes the component (and manifest) into `dir`.
    pub fn install(&self, dir: &Path) {
        if !self.manifest.is_empty() {
            std::fs::write(dir.join(format!("{}.toml", self.name)), &self.manifest)
                .expect("write manifest");
        }
        // Copy then rename, as an operator's deploy should: the watcher never sees half a file.
        let tmp = dir.join(format!(".{}.wasm.tmp", self.name));
        std::fs::copy(built_plugin(self.source), &tmp).expect("copy plugin");
        std::fs::rename(&tmp, dir.join(format!("{}.wasm", self.name))).expect("install plugin");
    }
}

/// The component built from `plugins/<name>` by this crate's build script.
pub fn built_plugin(name: &str) -> PathBuf {
    Path::new(env!("SLUICE_TEST_PLUGINS")).join(format!("{name}.wasm"))
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            upstream_role: Roles::SCRAM,
            upstream_tls: UpstreamTlsMode::Prefer,
            client_tls: "require",
            max_ttl: Duration::from_secs(3600),
            shutdown_grace: Duration::from_secs(5),
            extra_server_toml: String::new(),
            extra_upstream_toml: String::new(),
            extra_toml: String::new(),
            plugins: Vec::new(),
            extra_plugins_toml: String::new(),
            admin_addr: None,
            upstream_port: None,
            mcp: false,
            mcp_listen: None,
        }
    }
}

/// A gateway running in this process in front of the shared Postgres.
pub struct TestGateway {
    pub gateway: Gateway,
    pub tokens: TokenAuthority,
    /// The gateway's plugin host (`None` without a plugin directory).
    pub plugins: Option<std::sync::Arc<sluice::plugins::PluginHost>>,
    pub metrics: std::sync::Arc<sluice::metrics::Metrics>,
    /// The configuration the gateway runs.
    pub config: Config,
    pub config_path: PathBuf,
    /// The admin HTTP listener (approvals API, health, plugins).
    pub admin: std::net::SocketAddr,
    /// The MCP server, with `GatewayOptions::mcp`.
    pub mcp: Option<std::net::SocketAddr>,
    _admin_stop: tokio_util::sync::DropGuard,
    _dir: tempfile::TempDir,
}

impl TestGateway {
    pub async fn start() -> TestGateway {
        TestGateway::start_with(GatewayOptions::default()).await
    }

    pub async fn start_with(options: GatewayOptions) -> TestGateway {
        let pg = postgres();
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = write_config(dir.path(), pg, &options);
        let config = Config::load(&config_path).expect("test config is valid");
        let tokens = TokenAuthority::from_config(&config.identity).expect("key loads");
        let services = sluice::services::Services::build(config).expect("gateway starts");
        let admin_state = std::sync::Arc::new(AdminState::for_services(&services));
        let (plugins, metrics, config) = (
            services.plugins.clone(),
            services.metrics.clone(),
            services.config.clone(),
        );
        // The MCP server's state names its address, so its port is picked before it binds,
        // and another test may take the port in between: a few tries, each with its parts.
        let mut mcp_parts: Vec<_> = (0..if options.mcp { 5 } else { 0 })
            .map(|_| sluice::mcp::GatewayParts::of(&services))
            .collect();
        let gateway = Gateway::start(Shared::from_services(services))
            .await
            .expect("gateway binds");
        let admin_stop = tokio_util::sync::CancellationToken::new();
        let admin = sluice::admin::serve(
            options
                .admin_addr
                .unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()),
            admin_state,
            admin_stop.clone(),
        )
        .await
        .expect("admin listener binds");
        let mcp = match options.mcp {
            false => None,
            true => loop {
                let parts = mcp_parts.pop().expect("a free port within five tries");
                let addr = options
                    .mcp_listen
                    .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], free_port())));
                let state =
                    sluice::mcp::McpState::new(&config.mcp, addr, parts, gateway.local_door());
                match sluice::mcp::serve(addr, std::sync::Arc::new(state), admin_stop.clone()).await
                {
                    Ok(bound) => break Some(bound),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::AddrInUse
                            && options.mcp_listen.is_none() => {}
                    Err(e) => panic!("MCP listener binds: {e}"),
                }
            },
        };
        TestGateway {
            gateway,
            tokens,
            plugins,
            metrics,
            config,
            config_path,
            admin,
            mcp,
            _admin_stop: admin_stop.drop_guard(),
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.gateway.local_addr().port()
    }

    /// The plugin directory (when the gateway was started with plugins).
    pub fn plugin_dir(&self) -> PathBuf {
        self.config_path.with_file_name("plugins.d")
    }

    /// Reloads plugins now and waits for the swap (what the watcher does after its debounce).
    pub async fn reload_plugins(&self) {
        let host = self.plugins.clone().expect("plugins configured");
        tokio::task::spawn_blocking(move || host.reload())
            .await
            .expect("reload ran")
            .expect("plugin directory readable");
    }

    /// `GET /v1/approvals/{id}` as `subject` in `groups`: the request, asserted found.
    pub async fn approval(&self, id: &str, subject: &str, groups: &[&str]) -> serde_json::Value {
        let token = self.token_with_groups(subject, groups);
        let path = format!("/v1/approvals/{id}");
        let (code, body) = http(self.admin, "GET", &path, Some(&token), None).await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("the API answers JSON")
    }

    /// Revokes as an admin (`POST /v1/revocations` with `body`), asserting it is taken;
    /// returns the moment just before it was asked, to time what it ends.
    pub async fn revoke(&self, body: serde_json::Value) -> std::time::Instant {
        let admin = self.token_with_groups("security", &["sluice-admins"]);
        let at = std::time::Instant::now();
        let (code, answer) = http(
            self.admin,
            "POST",
            "/v1/revocations",
            Some(&admin),
            Some(&body.to_string()),
        )
        .await;
        assert_eq!(code, 201, "{answer}");
        at
    }

    /// Runs the real `sluice approvals` against this gateway's admin API as `token`.
    pub async fn approvals_cli(&self, token: &str, args: &[&str]) -> Output {
        tokio::process::Command::new(sluice_binary())
            .arg("approvals")
            .args(["--server", &format!("http://{}", self.admin)])
            .args(args)
            .env("SLUICE_TOKEN", token)
            .kill_on_drop(true)
            .output()
            .await
            .expect("sluice runs")
    }

    /// The first audit record of `kind`, once it is written.
    pub async fn audit_record(&self, kind: &str) -> serde_json::Value {
        let records = audit_records_when(&self.config.audit_path(), |all| {
            all.iter().any(|r| r["type"] == kind)
        })
        .await;
        records
            .into_iter()
            .find(|r| r["type"] == kind)
            .expect("waited for it")
    }

    /// A valid 5-minute token with `groups`.
    pub fn token_with_groups(&self, subject: &str, groups: &[&str]) -> String {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        self.tokens
            .mint(subject, DATABASE, &groups, Duration::from_secs(300))
            .expect("mint")
    }

    /// A valid 5-minute token for `subject` on the `app` database.
    pub fn token(&self, subject: &str) -> String {
        self.tokens
            .mint(subject, DATABASE, &[], Duration::from_secs(300))
            .expect("mint")
    }

    /// Claims to alter before signing with [`TestGateway::sign`].
    pub fn claims(&self, subject: &str, ttl: Duration) -> Claims {
        self.tokens.claims_for(subject, DATABASE, ttl)
    }

    pub fn sign(&self, claims: &Claims) -> String {
        self.tokens.sign_claims(claims).expect("sign")
    }

    /// tokio-postgres config for this gateway: TLS required, `user` and token as password.
    pub fn client_config(&self, user: &str, token: &str) -> tokio_postgres::Config {
        client_config(self.port(), user, token)
    }

    /// Connects with tokio-postgres over TLS; the connection task is spawned.
    pub async fn connect(
        &self,
        user: &str,
        token: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        connect_with(self.client_config(user, token)).await
    }

    /// Runs the real psql against this gateway with `args` after the connection string. Async:
    /// the gateway runs on the test's own runtime, so a blocking wait would starve it.
    pub async fn psql(&self, user: &str, token: &str, sslmode: &str, args: &[&str]) -> Output {
        let conninfo = format!(
            "host=127.0.0.1 port={} user={user} dbname={DATABASE} sslmode={sslmode}",
            self.port()
        );
        tokio::process::Command::new(client_binary("psql"))
            .arg(conninfo)
            .args(["-X", "-v", "ON_ERROR_STOP=1", "--no-psqlrc"])
            .args(args)
            .env("PGPASSWORD", token)
            .env("PGCONNECT_TIMEOUT", "10")
            .kill_on_drop(true)
            .output()
            .await
            .expect("psql runs")
    }
}

/// Runs `sql` (any number of statements) as the test Postgres's superuser in the test
/// database: the fixtures a scenario needs beyond the shared ones.
pub async fn as_superuser(sql: &str) {
    postgres()
        .server
        .superuser_client(DATABASE)
        .await
        .expect("superuser connects")
        .batch_execute(sql)
        .await
        .expect("fixture SQL runs");
}

/// One HTTP/1.1 request to `addr` (the admin listener), with a bearer token and a JSON body
/// when given. Returns the status code and the body.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("admin connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    tcp.write_all(request.as_bytes())
        .await
        .expect("admin write");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut response))
        .await
        .expect("admin answers within 30 s")
        .expect("admin read");
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// The claims of a JWT, read without checking its signature.
pub fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// Runs the real psql with `conninfo` and `password` for `sql`, asserting it succeeds;
/// returns what it printed (`-X -At`).
pub async fn psql_conninfo(conninfo: &str, password: &str, sql: &str) -> String {
    let out = tokio::process::Command::new(client_binary("psql"))
        .args([conninfo, "-X", "-At", "-c", sql])
        .env("PGPASSWORD", password)
        .output()
        .await
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A loopback port free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Runs `integration-tests/browser/approve.mjs` with `args` (headless Chromium through
/// playwright-core). Installs the driver with `npm ci` on first use; a missing node or
/// Chromium fails with how to install it.
pub async fn browser(args: &[&str]) -> Output {
    browser_script("approve.mjs", args).await
}

/// Runs `integration-tests/browser/<script>` with `args`, as [`browser`] does.
pub async fn browser_script(script: &str, args: &[&str]) -> Output {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "{chromium} not found: install Chromium (`apt-get install chromium`) or set CHROMIUM"
    );
    let dir = npm_installed("browser", "playwright-core").await;
    tokio::process::Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .env("CHROMIUM", chromium)
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs: install Node.js (`apt-get install nodejs npm`)")
}

/// `integration-tests/<package>` with its npm dependencies installed (`npm ci`, once per
/// test binary, unless `node_modules/<module>` is there already). A missing Node.js fails with
/// how to install it.
pub async fn npm_installed(package: &str, module: &str) -> PathBuf {
    static INSTALL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(package);
    let _one_at_a_time = INSTALL.lock().await;
    if !dir.join("node_modules").join(module).is_dir() {
        let npm = tokio::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .await
            .expect("npm runs: install Node.js (`apt-get install nodejs npm`)");
        assert!(
            npm.status.success(),
            "npm ci in {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&npm.stderr)
        );
    }
    dir
}

/// tokio-postgres config for a gateway on `port`: TLS required, `user` and token as password.
pub fn client_config(port: u16, user: &str, token: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .password(token)
        .dbname(DATABASE)
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(10));
    config
}

/// A gateway running as its own `sluice serve` process in front of the shared Postgres, to
/// measure the gateway alone (memory, descriptors). Killed on drop.
pub struct GatewayProcess {
    child: tokio::process::Child,
    port: u16,
    pub tokens: TokenAuthority,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl GatewayProcess {
    pub async fn start(options: GatewayOptions) -> GatewayProcess {
        let pg = postgres();
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = write_config(dir.path(), pg, &options);
        let config = Config::load(&config_path).expect("test config is valid");
        let tokens = TokenAuthority::from_config(&config.identity).expect("key loads");
        let (child, port) = spawn_gateway(&config_path).await;
        GatewayProcess {
            child,
            port,
            tokens,
            config_path,
            _dir: dir,
        }
    }

    /// SIGKILL: no shutdown, no flushing, nothing.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill the gateway");
    }

    /// Starts the gateway again on the same config (after [`GatewayProcess::kill`]); it may
    /// listen on another port.
    pub async fn restart(&mut self) {
        let (child, port) = spawn_gateway(&self.config_path).await;
        self.child = child;
        self.port = port;
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Resident memory of the gateway process in bytes.
    pub fn resident_bytes(&self) -> u64 {
        let pid = self.child.id().expect("gateway running");
        statm_resident(&format!("/proc/{pid}/statm"))
    }

    /// A valid 5-minute token for `subject` on the `app` database.
    pub fn token(&self, subject: &str) -> String {
        self.tokens
            .mint(subject, DATABASE, &[], Duration::from_secs(300))
            .expect("mint")
    }
}

/// Runs `sluice serve` on `config_path` and waits for its listening port.
async fn spawn_gateway(config_path: &Path) -> (tokio::process::Child, u16) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(sluice_binary())
        .args(["--log-format", "json", "serve", "--config"])
        .arg(config_path)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sluice serve starts");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let port = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("gateway log") {
            if let Some(at) = line.find("\"local_addr\":\"") {
                let rest = &line[at + 14..];
                let addr = &rest[..rest.find('"').expect("quoted address")];
                return addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
            }
        }
        None
    })
    .await
    .expect("the gateway logs its address within 30 s")
    .expect("the gateway started and logged its address");
    // The log must keep draining, or the gateway blocks writing it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}

/// The `sluice` binary built beside this test binary (`cargo test --workspace` builds it).
pub fn sluice_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> → target/<profile>/sluice
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("sluice"))
        .expect("target directory");
    assert!(
        path.is_file(),
        "the sluice binary is not built at {}: run the tests with `cargo test --workspace`, or `cargo build -p sluice` first",
        path.display()
    );
    path
}

/// Connects with tokio-postgres using TLS without certificate checks (the gateway's certificate
/// is self-signed in tests); the connection task is spawned.
pub async fn connect_with(
    config: tokio_postgres::Config,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(tls_connector()).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

pub fn tls_connector() -> tokio_postgres_rustls::MakeRustlsConnect {
    let config = sluice::tls::upstream_config(UpstreamTlsMode::Require, None)
        .expect("tls config")
        .expect("tls enabled");
    tokio_postgres_rustls::MakeRustlsConnect::new((*config).clone())
}

/// A Postgres client program (psql, pgbench), found as the harness finds the server.
pub fn client_binary(name: &str) -> PathBuf {
    sluice::localpg::find_program(name).unwrap_or_else(|| {
        panic!("{name} not found via pg_config --bindir or PATH: install it with `apt-get install postgresql-client`")
    })
}

fn write_config(dir: &Path, pg: &TestPostgres, options: &GatewayOptions) -> PathBuf {
    let plugins_toml = if options.plugins.is_empty() {
        String::new()
    } else {
        let plugin_dir = dir.join("plugins.d");
        std::fs::create_dir_all(&plugin_dir).expect("plugin dir");
        // The gateway refuses a plugin directory others may write, whatever the umask.
        std::fs::set_permissions(
            &plugin_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("plugin dir mode");
        for plugin in &options.plugins {
            plugin.install(&plugin_dir);
        }
        format!(
            "[plugins]\ndir = \"./plugins.d\"\nreload_debounce = \"50ms\"\n{}\n",
            options.extra_plugins_toml
        )
    };
    SigningKey::generate()
        .expect("key")
        .write_new(&dir.join("signing.pem"))
        .expect("write key");
    std::fs::write(dir.join("upstream.password"), &pg.role_password).expect("write password");
    let tls = match options.upstream_tls {
        UpstreamTlsMode::Disable => "disable",
        UpstreamTlsMode::Prefer => "prefer",
        UpstreamTlsMode::Require => "require",
        UpstreamTlsMode::VerifyFull => "verify-full",
    };
    let ca = pg.server.ca_cert();
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"
data_dir = "./data"
shutdown_grace = "{grace}ms"
{extra}
{plugins_toml}
[tls]
mode = "{client_tls}"
[identity]
signing_key = "./signing.pem"
max_ttl = "{max_ttl}s"
[[upstream]]
database = "{DATABASE}"
url = "postgres://{role}@127.0.0.1:{port}/{DATABASE}"
password_file = "./upstream.password"
tls = "{tls}"
{upstream_extra}
{appended}
"#,
        appended = options.extra_toml,
        grace = options.shutdown_grace.as_millis(),
        extra = options.extra_server_toml,
        client_tls = options.client_tls,
        max_ttl = options.max_ttl.as_secs(),
        role = options.upstream_role,
        port = options.upstream_port.unwrap_or_else(|| pg.server.port()),
        upstream_extra = if options.extra_upstream_toml.is_empty() {
            format!("ca_file = \"{}\"", ca.display())
        } else {
            options.extra_upstream_toml.clone()
        },
    );
    let path = dir.join("sluice.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Resident memory of this process in bytes (Linux).
pub fn resident_bytes() -> u64 {
    statm_resident("/proc/self/statm")
}

fn statm_resident(path: &str) -> u64 {
    let statm = std::fs::read_to_string(path).unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The SQLSTATE of a tokio-postgres error, or "" when it is not a server error.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_owned())
        .unwrap_or_default()
}

/// The message of a database error (empty for an error that is not one).
pub fn error_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default()
}

/// A client speaking the protocol by hand, for what drivers will not send: pipelines with
/// errors in the middle, malformed messages, raw cancel requests.
pub struct RawClient {
    stream: tokio_util::either::Either<
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        tokio::net::TcpStream,
    >,
    buf: bytes::BytesMut,
    /// BackendKeyData the gateway handed out.
    pub key: (i32, i32),
}

/// One backend message: type byte and body.
#[derive(Debug, Clone)]
pub struct Msg {
    pub tag: u8,
    pub body: bytes::Bytes,
}

impl Msg {
    /// The SQLSTATE of an ErrorResponse or NoticeResponse.
    pub fn sqlstate(&self) -> String {
        self.field(b'C')
    }

    /// The message text of an ErrorResponse or NoticeResponse.
    pub fn message(&self) -> String {
        self.field(b'M')
    }

    fn field(&self, code: u8) -> String {
        sluice::wire::backend::error_field(&self.body, code).unwrap_or_default()
    }
}

/// pgbench against a gateway on `port` as `user` with `token`, over TLS: `args` (clients,
/// duration, mode...), then the script file and the test database. Killed if dropped.
pub fn pgbench(
    port: u16,
    user: &str,
    token: &str,
    args: &[&str],
    script: &Path,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(client_binary("pgbench"));
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", user])
        .args(args)
        .arg("-f")
        .arg(script)
        .arg(DATABASE)
        .env("PGPASSWORD", token)
        .env("PGSSLMODE", "require")
        .kill_on_drop(true);
    command
}

/// A pgbench custom script holding `text`, for [`pgbench`]; the file lives as long as the value.
pub fn pgbench_script(text: &str) -> tempfile::NamedTempFile {
    let script = tempfile::NamedTempFile::new().expect("pgbench script file");
    std::fs::write(script.path(), text).expect("write pgbench script");
    script
}

/// Asserts that a pgbench run exited cleanly with no failed transaction; returns its report.
pub fn assert_pgbench_clean(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "{stdout}"
    );
    stdout
}

/// A simple-protocol Query message.
pub fn query_message(sql: &str) -> bytes::BytesMut {
    let mut out = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query(sql, &mut out).expect("query message");
    out
}

impl RawClient {
    /// TLS, startup and token login; returns after the first ReadyForQuery.
    pub async fn connect(gw: &TestGateway, user: &str, token: &str) -> RawClient {
        let mut client = RawClient::start_login(gw, user).await;
        let mut out = bytes::BytesMut::new();
        postgres_protocol::message::frontend::password_message(token.as_bytes(), &mut out).unwrap();
        client.send(&out).await;
        for msg in client.until_ready().await {
            match msg.tag {
                b'E' => panic!(
                    "login failed: {}",
                    sluice::wire::backend::error_summary(&msg.body)
                ),
                b'K' => {
                    let b = &msg.body;
                    client.key = (
                        i32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                        i32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                    );
                }
                _ => {}
            }
        }
        client
    }

    /// TLS and the startup packet, up to the gateway's request for the token.
    pub async fn start_login(gw: &TestGateway, user: &str) -> RawClient {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port()))
            .await
            .expect("connect");
        let mut buf = bytes::BytesMut::new();
        postgres_protocol::message::frontend::ssl_request(&mut buf);
        tcp.write_all(&buf).await.unwrap();
        assert_eq!(tcp.read_u8().await.unwrap(), b'S');
        let config = sluice::tls::upstream_config(UpstreamTlsMode::Require, None)
            .unwrap()
            .unwrap();
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .expect("tls");
        let mut client = RawClient {
            stream: tokio_util::either::Either::Left(tls),
            buf: bytes::BytesMut::new(),
            key: (0, 0),
        };
        let mut out = bytes::BytesMut::new();
        postgres_protocol::message::frontend::startup_message(
            [("user", user), ("database", DATABASE)],
            &mut out,
        )
        .unwrap();
        client.send(&out).await;
        let auth = client.recv().await.expect("auth request");
        assert_eq!(auth.tag, b'R');
        client
    }

    /// Sends a CancelRequest with `key` on a new plain connection, as libpq does, and waits
    /// for the gateway to close it (it has acted on the request by then).
    pub async fn cancel_with(gw: &TestGateway, (pid, secret): (i32, i32)) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port()))
            .await
            .expect("connect");
        let mut request = bytes::BytesMut::new();
        postgres_protocol::message::frontend::cancel_request(pid, secret, &mut request);
        tcp.write_all(&request).await.expect("send cancel");
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut sink)).await;
    }

    /// Cancels this session's running (or held) statement.
    pub async fn cancel(&self, gw: &TestGateway) {
        RawClient::cancel_with(gw, self.key).await;
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.expect("send");
        self.stream.flush().await.expect("flush");
    }

    /// The next message, or `None` when the gateway closed the connection.
    pub async fn recv(&mut self) -> Option<Msg> {
        use tokio::io::AsyncReadExt;
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() > len {
                    let raw = self.buf.split_to(len + 1).freeze();
                    return Some(Msg {
                        tag: raw[0],
                        body: raw.slice(5..),
                    });
                }
            }
            match tokio::time::timeout(Duration::from_secs(30), self.stream.read_buf(&mut self.buf))
                .await
                .expect("gateway answered within 30s")
            {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Sends `bytes`, then returns the reply up to and including the next ReadyForQuery.
    pub async fn exchange(&mut self, bytes: &[u8]) -> Vec<Msg> {
        self.send(bytes).await;
        self.until_ready().await
    }

    /// Messages up to and including the next ReadyForQuery (or until the connection closes).
    pub async fn until_ready(&mut self) -> Vec<Msg> {
        let mut messages = Vec::new();
        while let Some(msg) = self.recv().await {
            let done = msg.tag == b'Z';
            messages.push(msg);
            if done {
                break;
            }
        }
        messages
    }
}

/// Message type bytes of `messages`, as a string for compact assertions.
pub fn tags(messages: &[Msg]) -> String {
    messages.iter().map(|m| m.tag as char).collect()
}

/// Appends Bind (unnamed portal and statement, text-format `params`) and Execute to `out`.
pub fn bind_and_execute(out: &mut bytes::BytesMut, params: &[&str]) {
    bind_statement_and_execute(out, "", params);
}

/// Appends Bind (unnamed portal, prepared statement `statement`, text-format `params`) and
/// Execute to `out`.
pub fn bind_statement_and_execute(out: &mut bytes::BytesMut, statement: &str, params: &[&str]) {
    use postgres_protocol::IsNull;
    type BoxError = Box<dyn std::error::Error + Sync + Send>;
    postgres_protocol::message::frontend::bind(
        "",
        statement,
        params.iter().map(|_| 0i16),
        params.iter().map(|p| p.as_bytes()),
        |value: &[u8], buf: &mut bytes::BytesMut| -> Result<IsNull, BoxError> {
            buf.extend_from_slice(value);
            Ok(IsNull::No)
        },
        Some(0i16),
        out,
    )
    .map_err(|_| ())
    .expect("encode Bind");
    postgres_protocol::message::frontend::execute("", 0, out).expect("encode Execute");
}

/// The sizes of the TLS records in one direction of a connection, read off the bytes as they
/// pass: what a peer's TLS library has to take in one piece.
#[derive(Default)]
pub struct TlsRecords {
    /// Leading plaintext bytes before the first record (an SSLRequest, or its answer).
    skip: usize,
    header: [u8; 5],
    header_len: usize,
    body_left: usize,
    /// The largest record body seen, in bytes.
    pub largest: usize,
    /// Application-data records seen.
    pub application_data: usize,
}

impl TlsRecords {
    /// A meter that lets `skip` plaintext bytes pass before the first record.
    pub fn after(skip: usize) -> TlsRecords {
        TlsRecords {
            skip,
            ..TlsRecords::default()
        }
    }

    /// Feeds the next bytes of the direction.
    pub fn saw(&mut self, mut bytes: &[u8]) {
        let skipped = self.skip.min(bytes.len());
        self.skip -= skipped;
        bytes = &bytes[skipped..];
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let taken = self.body_left.min(bytes.len());
                self.body_left -= taken;
                bytes = &bytes[taken..];
                continue;
            }
            let taken = (5 - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + taken].copy_from_slice(&bytes[..taken]);
            self.header_len += taken;
            bytes = &bytes[taken..];
            if self.header_len == 5 {
                self.header_len = 0;
                self.body_left = u16::from_be_bytes([self.header[3], self.header[4]]) as usize;
                self.largest = self.largest.max(self.body_left);
                // Content type 23: application data (all of TLS 1.3's encrypted records).
                if self.header[0] == 23 {
                    self.application_data += 1;
                }
            }
        }
    }
}

/// A stream whose incoming bytes are metered as TLS records (after the one-byte answer to the
/// SSLRequest), for a client that wants to see what the gateway sends it.
pub struct MeteredStream {
    pub inner: tokio::net::TcpStream,
    pub records: std::sync::Arc<std::sync::Mutex<TlsRecords>>,
}

impl tokio::io::AsyncRead for MeteredStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if polled.is_ready() {
            self.records.lock().unwrap().saw(&buf.filled()[before..]);
        }
        polled
    }
}

impl tokio::io::AsyncWrite for MeteredStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A TCP relay on loopback in front of the test Postgres that meters, as TLS records, what
/// each connection sends towards Postgres after its 8-byte SSLRequest: the gateway's upstream
/// leg as Postgres sees it. Stops when dropped.
pub struct UpstreamMeter {
    pub port: u16,
    pub records: std::sync::Arc<std::sync::Mutex<TlsRecords>>,
    _task: tokio_util::sync::DropGuard,
}

impl UpstreamMeter {
    pub async fn start() -> UpstreamMeter {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("meter binds");
        let port = listener.local_addr().expect("meter address").port();
        let records = std::sync::Arc::new(std::sync::Mutex::new(TlsRecords::default()));
        let stop = tokio_util::sync::CancellationToken::new();
        let upstream_port = postgres().server.port();
        let accepting = {
            let records = records.clone();
            let stop = stop.clone();
            async move {
                loop {
                    let (gateway, _) = tokio::select! {
                        () = stop.cancelled() => return,
                        accepted = listener.accept() => accepted.expect("meter accepts"),
                    };
                    let upstream = tokio::net::TcpStream::connect(("127.0.0.1", upstream_port))
                        .await
                        .expect("meter reaches Postgres");
                    let (mut from_gateway, mut to_gateway) = gateway.into_split();
                    let (mut from_upstream, mut to_upstream) = upstream.into_split();
                    let records = records.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        let towards_upstream = async {
                            // Each connection starts with its own SSLRequest.
                            let mut meter = TlsRecords::after(8);
                            let mut buf = vec![0; 64 * 1024];
                            loop {
                                let n = from_gateway.read(&mut buf).await.unwrap_or(0);
                                if n == 0 {
                                    break;
                                }
                                let before = meter.application_data;
                                meter.saw(&buf[..n]);
                                {
                                    let mut total = records.lock().unwrap();
                                    total.largest = total.largest.max(meter.largest);
                                    total.application_data += meter.application_data - before;
                                }
                                if to_upstream.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                            let _ = to_upstream.shutdown().await;
                        };
                        let towards_gateway = async {
                            let _ = tokio::io::copy(&mut from_upstream, &mut to_gateway).await;
                            let _ = to_gateway.shutdown().await;
                        };
                        tokio::select! {
                            () = stop.cancelled() => {}
                            _ = async { tokio::join!(towards_upstream, towards_gateway) } => {}
                        }
                    });
                }
            }
        };
        tokio::spawn(accepting);
        UpstreamMeter {
            port,
            records,
            _task: stop.drop_guard(),
        }
    }
}

/// The records of the audit log at `path` once `done` holds for them (records not waited on
/// by the gateway are written a moment after what caused them); fails after 10 s.
pub async fn audit_records_when(
    path: &Path,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let started = std::time::Instant::now();
    loop {
        let all: Vec<serde_json::Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line is a JSON record"))
            .collect();
        if done(&all) {
            return all;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the audit log never got there: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long after `from` the connection of `client` was found closed; fails after 10 s.
pub async fn closed_after(client: &tokio_postgres::Client, from: std::time::Instant) -> Duration {
    while !client.is_closed() {
        assert!(
            from.elapsed() < Duration::from_secs(10),
            "the session is still open"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    from.elapsed()
}
