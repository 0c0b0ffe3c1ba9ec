//! The gateway's TOML configuration: parsed, resolved against the config file's directory and
//! validated as a whole before anything starts, so a bad file never leaves a half-configured
//! gateway behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration problem, always naming the file and, where there is one, the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("{file}: key `{key}`: {message}")]
    Invalid {
        file: PathBuf,
        key: String,
        message: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where clients connect and where the gateway keeps its files.
    pub server: ServerConfig,
    /// TLS towards clients.
    #[serde(default)]
    pub tls: TlsConfig,
    /// How client tokens are minted and checked.
    pub identity: IdentityConfig,
    /// The databases this gateway serves, one entry per client-visible database name.
    #[serde(rename = "upstream")]
    pub upstreams: Vec<UpstreamConfig>,
    /// The admin HTTP listener.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Policy plugins.
    #[serde(default)]
    pub plugins: PluginsConfig,
    /// Statements held for a human decision.
    #[serde(default)]
    pub approvals: ApprovalsConfig,
    /// Where approvals and grants are kept.
    #[serde(default)]
    pub state: StateConfig,
    /// The audit log.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Result masking by masking plugins.
    #[serde(default)]
    pub masking: MaskingConfig,
    /// Limits on what one statement may use.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The file this configuration was read from (set by [`Config::load`]).
    #[serde(skip)]
    pub source: PathBuf,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the Postgres-protocol listener binds, e.g. `127.0.0.1:6433`.
    pub listen: SocketAddr,
    /// Directory for generated files (self-signed certificate, later state); created if missing.
    pub data_dir: PathBuf,
    /// How long sessions may run on after SIGTERM before they are closed.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Largest protocol message accepted from a client, in bytes.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    /// Largest protocol message accepted from an upstream, in bytes. Postgres sends rows as
    /// large as its 1 GB value limit; a larger message ends the session with 54000 naming this.
    #[serde(default = "default_max_upstream_message_size")]
    pub max_upstream_message_size: usize,
    /// Session threads; 0 (the default) means one per CPU core.
    #[serde(default)]
    pub workers: usize,
    /// Time a client has to finish startup and authentication.
    #[serde(default = "default_login_timeout", with = "humantime_serde")]
    pub login_timeout: Duration,
    /// Open client connections, logins included; beyond it a client gets FATAL 53300.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Sessions one token subject may hold at once (0: no limit).
    #[serde(default = "default_max_connections_per_subject")]
    pub max_connections_per_subject: usize,
    /// A session with no statement in flight and nothing from the client for this long is
    /// closed with FATAL 57P05 ("0s": never).
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A write to a client still waiting after this long (the client stopped reading while the
    /// gateway holds data for it) is logged and counted in `/metrics` as a stalled client write
    /// ("0s": not watched).
    #[serde(default = "default_client_write_stall", with = "humantime_serde")]
    pub client_write_stall: Duration,
}

/// Whether clients must use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ClientTlsMode {
    /// Clients without TLS are refused before they can send a token.
    #[default]
    Require,
    /// TLS is offered; clients may also connect in cleartext.
    Prefer,
}

/// `[tls]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// `require` (default) or `prefer`.
    #[serde(default)]
    pub mode: ClientTlsMode,
    /// PEM certificate chain; absent, a self-signed certificate is generated in `data_dir`.
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    pub key: Option<PathBuf>,
}

/// `[identity]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Ed25519 private key (PKCS#8 PEM) that signs and verifies gateway tokens.
    pub signing_key: PathBuf,
    /// `iss` of minted tokens; required of presented ones.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// `aud` of minted tokens; required of presented ones.
    #[serde(default = "default_issuer")]
    pub audience: String,
    /// Longest lifetime a minted token may have.
    #[serde(default = "default_max_ttl", with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Clock skew tolerated on `nbf` (not-before). Expiry is enforced exactly.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
}

/// TLS towards an upstream Postgres, with libpq's meaning of each mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTlsMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, cleartext otherwise; the certificate is not verified.
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not verified.
    Require,
    /// TLS with the certificate chain checked against `ca_file` and the host name checked.
    VerifyFull,
}

/// `[[upstream]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The database name clients ask for.
    pub database: String,
    /// `postgres://user@host:port/dbname` of the real database; no password here.
    pub url: String,
    /// Environment variable holding the upstream password.
    pub password_env: Option<String>,
    /// File holding the upstream password (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// `disable`, `prefer` (default), `require` or `verify-full`.
    #[serde(default)]
    pub tls: UpstreamTlsMode,
    /// CA bundle (PEM) for `verify-full`.
    pub ca_file: Option<PathBuf>,
    /// Time allowed to connect and log in upstream.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// This database's statement budget, in place of `[limits] statement_timeout`.
    #[serde(default, with = "humantime_serde")]
    pub statement_timeout: Option<Duration>,
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the HTTP admin listener; absent, no admin listener runs.
    pub listen: Option<SocketAddr>,
}

/// `[plugins]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Directory of `<name>.wasm` components and `<name>.toml` manifests; absent, no plugins.
    pub dir: Option<PathBuf>,
    /// Time one plugin call may take (epoch deadline), unless its manifest says otherwise.
    #[serde(default = "default_plugin_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Linear-memory cap per plugin instance, MiB.
    #[serde(default = "default_plugin_memory")]
    pub memory_mib: u64,
    /// Quiet time after a change in `dir` before reloading.
    #[serde(default = "default_reload_debounce", with = "humantime_serde")]
    pub reload_debounce: Duration,
    /// Plugins (by file name without `.wasm`) that must be serving: while one is missing,
    /// fails to load with no earlier version to keep, or is disabled, every statement is
    /// refused, naming it.
    #[serde(default)]
    pub required: Vec<String>,
    /// The largest component file compiled, MiB.
    #[serde(default = "default_max_component_mib")]
    pub max_component_mib: u64,
    /// The most functions compiled across a component's core modules.
    #[serde(default = "default_max_functions")]
    pub max_functions: u64,
}

/// The default of `plugins.max_component_mib`.
pub const DEFAULT_MAX_COMPONENT_MIB: u64 = 64;
/// The default of `plugins.max_functions`: CPython's componentize-py component has ~13,400,
/// Rust plugins a few hundred.
pub const DEFAULT_MAX_FUNCTIONS: u64 = 50_000;

fn default_max_component_mib() -> u64 {
    DEFAULT_MAX_COMPONENT_MIB
}

fn default_max_functions() -> u64 {
    DEFAULT_MAX_FUNCTIONS
}

/// Whether `name` may name a plugin (a file of the plugin directory, an entry of
/// `plugins.required`): 1 to 64 ASCII letters, digits, `-` and `_`, not starting with `-`.
pub fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            dir: None,
            timeout: default_plugin_timeout(),
            memory_mib: default_plugin_memory(),
            reload_debounce: default_reload_debounce(),
            required: Vec::new(),
            max_component_mib: default_max_component_mib(),
            max_functions: default_max_functions(),
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// How long one statement may run ("0s": no budget). Sessions log in with it as
    /// `statement_timeout`, may lower but never lift it, and a request still running past it
    /// and `statement_timeout_grace` is cancelled by the gateway.
    #[serde(default = "default_statement_timeout", with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// How long past the budget the gateway waits for Postgres' own timeout before it cancels.
    #[serde(default = "default_statement_timeout_grace", with = "humantime_serde")]
    pub statement_timeout_grace: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            statement_timeout: default_statement_timeout(),
            statement_timeout_grace: default_statement_timeout_grace(),
        }
    }
}

fn default_statement_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_statement_timeout_grace() -> Duration {
    Duration::from_secs(5)
}

/// `[masking]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingConfig {
    /// How long the catalog cache (table OIDs, column names, view definitions) is trusted
    /// before it is read again. DDL through the gateway, and a table OID the cache does not
    /// know, refresh it at once.
    #[serde(default = "default_catalog_ttl", with = "humantime_serde")]
    pub catalog_ttl: Duration,
    /// Rows collected before a `custom` column's values go to its plugin in one call (fewer if
    /// the upstream pauses or the result ends).
    #[serde(default = "default_transform_batch")]
    pub transform_batch: usize,
    /// What a masked session's statement calling a user-defined function meets: `refuse`
    /// (default: its body may read masked tables and hand the values out) or `derive` (its
    /// results count as derived from every column of every table in the function's schema).
    #[serde(default)]
    pub user_functions: UserFunctions,
}

/// See [`MaskingConfig::user_functions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UserFunctions {
    #[default]
    Refuse,
    Derive,
}

impl Default for MaskingConfig {
    fn default() -> Self {
        MaskingConfig {
            catalog_ttl: default_catalog_ttl(),
            transform_batch: default_transform_batch(),
            user_functions: UserFunctions::default(),
        }
    }
}

fn default_catalog_ttl() -> Duration {
    Duration::from_secs(60)
}

fn default_transform_batch() -> usize {
    256
}

/// `[approvals]`: the route for requests no approval plugin routes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// Token groups whose members may decide.
    #[serde(default = "default_approver_groups")]
    pub approver_groups: Vec<String>,
    /// Distinct approvers a request needs.
    #[serde(default = "default_approvals_needed")]
    pub approvals_needed: u32,
    /// How long a held statement waits for a decision.
    #[serde(default = "default_approval_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Statements one subject may have waiting at once; beyond it a new one is refused with
    /// 53400 (0: no limit).
    #[serde(default = "default_max_pending_per_subject")]
    pub max_pending_per_subject: usize,
    /// URLs (http or https) that get a JSON POST (Slack-compatible `text`) for each held
    /// statement.
    #[serde(default)]
    pub webhooks: Vec<url::Url>,
    /// How long one webhook delivery may take.
    #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
    pub webhook_timeout: Duration,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig {
            approver_groups: default_approver_groups(),
            approvals_needed: default_approvals_needed(),
            timeout: default_approval_timeout(),
            max_pending_per_subject: default_max_pending_per_subject(),
            webhooks: Vec::new(),
            webhook_timeout: default_webhook_timeout(),
        }
    }
}

fn default_approver_groups() -> Vec<String> {
    vec!["approvers".to_owned()]
}
fn default_approvals_needed() -> u32 {
    1
}
fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_pending_per_subject() -> usize {
    10
}
fn default_approval_timeout() -> Duration {
    Duration::from_secs(300)
}

/// `[audit]`: the tamper-evident record of sessions, statements, decisions and approvals.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Off: nothing is recorded (for benchmarks and throwaway setups).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The log file (relative to the config file); default `audit/audit.jsonl` in `data_dir`.
    /// Rotated files sit beside it as `<name>.<first seq>`, the signed head as `<name>.head`.
    pub path: Option<PathBuf>,
    /// When the record that allows a statement counts as written: `write` (handed to the
    /// kernel before the statement is forwarded: survives a crash of the gateway), `fsync`
    /// (also on disk before the statement can change anything — at once for COMMIT, writes
    /// outside a transaction block, DDL, function calls; for the rest, before rows it returns
    /// reach the client: survives the machine) or `fsync-before-forward` (on disk before every
    /// statement is forwarded).
    #[serde(default)]
    pub durability: Durability,
    /// What a statement meets when the log cannot be written: `refuse` (fail closed) or
    /// `continue` (run it unrecorded, logging the failure).
    #[serde(default)]
    pub on_failure: OnAuditFailure,
    /// `full` text with parameter values, or `normalized` (constants replaced by `$n`, no
    /// parameter values).
    #[serde(default)]
    pub statement_text: StatementText,
    /// Rotate when the file reaches this many MiB (0: never by size).
    #[serde(default = "default_rotate_mib")]
    pub rotate_mib: u64,
    /// Rotate when the file is this old (0: never by age).
    #[serde(default, with = "humantime_serde")]
    pub rotate_interval: Option<Duration>,
    /// How often a signed checkpoint is written while records keep coming.
    #[serde(default = "default_checkpoint_interval", with = "humantime_serde")]
    pub checkpoint_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            path: None,
            durability: Durability::default(),
            on_failure: OnAuditFailure::default(),
            statement_text: StatementText::default(),
            rotate_mib: default_rotate_mib(),
            rotate_interval: None,
            checkpoint_interval: default_checkpoint_interval(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    #[default]
    Write,
    Fsync,
    FsyncBeforeForward,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnAuditFailure {
    #[default]
    Refuse,
    Continue,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatementText {
    #[default]
    Full,
    Normalized,
}

fn default_true() -> bool {
    true
}
fn default_rotate_mib() -> u64 {
    256
}
fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(10)
}

/// `[state]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// `sqlite://PATH` (relative to the config file); default `state.db` in `data_dir`.
    pub url: Option<String>,
}

impl Config {
    /// The audit log file.
    pub fn audit_path(&self) -> PathBuf {
        self.audit
            .path
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("audit").join("audit.jsonl"))
    }

    /// The SQLite file the state store lives in.
    pub fn state_path(&self) -> Result<PathBuf, ConfigError> {
        match &self.state.url {
            None => Ok(self.server.data_dir.join("state.db")),
            Some(url) => match url.strip_prefix("sqlite://") {
                Some(path) if !path.is_empty() => {
                    let base = self.source.parent().unwrap_or(Path::new("."));
                    Ok(base.join(path))
                }
                _ => Err(self.invalid(
                    "state.url",
                    "must be sqlite://PATH (the PostgreSQL store is not available yet)",
                )),
            },
        }
    }
}

fn default_plugin_timeout() -> Duration {
    Duration::from_millis(20)
}
fn default_plugin_memory() -> u64 {
    64
}
fn default_reload_debounce() -> Duration {
    Duration::from_millis(200)
}

fn default_shutdown_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_max_message_size() -> usize {
    256 * 1024 * 1024
}
fn default_max_upstream_message_size() -> usize {
    // A 1 GB value in a row, with its length fields and a little more.
    1024 * 1024 * 1024 + 64 * 1024 * 1024
}
fn default_login_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_connections() -> usize {
    1000
}
fn default_max_connections_per_subject() -> usize {
    100
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(3600)
}
fn default_client_write_stall() -> Duration {
    Duration::from_secs(30)
}
fn default_issuer() -> String {
    "sluice".to_owned()
}
fn default_max_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_leeway() -> Duration {
    Duration::from_secs(5)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Config {
    /// Reads, resolves and validates `file`. Relative paths in it are taken relative to the
    /// file's own directory, so a config works the same from any working directory.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        Config::from_toml(&text, file)
    }

    /// Parses `text` as if it had been read from `file`.
    pub fn from_toml(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_owned(),
            message: e.to_string(),
        })?;
        config.source = file.to_owned();
        let base = file.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.validate()?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.server.data_dir);
        resolve(&mut self.identity.signing_key);
        self.tls.cert.as_mut().map(resolve);
        self.tls.key.as_mut().map(resolve);
        self.plugins.dir.as_mut().map(resolve);
        self.audit.path.as_mut().map(resolve);
        for upstream in &mut self.upstreams {
            upstream.password_file.as_mut().map(resolve);
            upstream.ca_file.as_mut().map(resolve);
        }
    }

    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.source.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// Checks everything that can be checked without side effects.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(self.invalid("tls.cert", "tls.cert and tls.key must be set together"));
        }
        if self.identity.max_ttl.is_zero() {
            return Err(self.invalid("identity.max_ttl", "must be longer than zero"));
        }
        if self.identity.issuer.is_empty() {
            return Err(self.invalid("identity.issuer", "must not be empty"));
        }
        if self.identity.audience.is_empty() {
            return Err(self.invalid("identity.audience", "must not be empty"));
        }
        if self.server.max_message_size < 1024 {
            return Err(self.invalid("server.max_message_size", "must be at least 1024 bytes"));
        }
        if self.plugins.timeout.is_zero() {
            return Err(self.invalid("plugins.timeout", "must be longer than zero"));
        }
        if self.plugins.memory_mib == 0 {
            return Err(self.invalid("plugins.memory_mib", "must be at least 1"));
        }
        if !(1..=65_536).contains(&self.masking.transform_batch) {
            return Err(self.invalid("masking.transform_batch", "must be between 1 and 65536"));
        }
        if !self.plugins.required.is_empty() && self.plugins.dir.is_none() {
            return Err(self.invalid(
                "plugins.required",
                "names plugins, but there is no plugins.dir to load them from",
            ));
        }
        if let Some(name) = self.plugins.required.iter().find(|n| !valid_plugin_name(n)) {
            return Err(self.invalid(
                "plugins.required",
                format!(
                    "\"{}\" is not a plugin name (letters, digits, '-' and '_')",
                    crate::display::line(name)
                ),
            ));
        }
        if let Some(dir) = &self.plugins.dir
            && !dir.is_dir()
        {
            return Err(self.invalid(
                "plugins.dir",
                format!("{} is not a directory", dir.display()),
            ));
        }
        self.state_path()?;
        if self.approvals.approver_groups.is_empty() {
            return Err(self.invalid("approvals.approver_groups", "must name at least one group"));
        }
        if self.approvals.approvals_needed == 0 {
            return Err(self.invalid("approvals.approvals_needed", "must be at least 1"));
        }
        if let Some(hook) = self
            .approvals
            .webhooks
            .iter()
            .find(|u| !matches!(u.scheme(), "http" | "https") || u.host_str().is_none())
        {
            return Err(self.invalid(
                "approvals.webhooks",
                // Not the URL itself: webhook paths often carry a secret.
                format!(
                    "webhooks must be http:// or https:// URLs with a host (got a {}: URL)",
                    hook.scheme()
                ),
            ));
        }
        if self.approvals.timeout.is_zero() {
            return Err(self.invalid("approvals.timeout", "must be longer than zero"));
        }
        if self.upstreams.is_empty() {
            return Err(self.invalid("upstream", "at least one [[upstream]] is required"));
        }
        for (i, upstream) in self.upstreams.iter().enumerate() {
            let key = |k: &str| format!("upstream[{i}].{k}");
            if upstream.database.is_empty() {
                return Err(self.invalid(key("database"), "must not be empty"));
            }
            if self.upstreams[..i]
                .iter()
                .any(|u| u.database == upstream.database)
            {
                return Err(self.invalid(
                    key("database"),
                    format!("database {:?} is configured twice", upstream.database),
                ));
            }
            UpstreamTarget::parse(&upstream.url).map_err(|m| self.invalid(key("url"), m))?;
            if upstream.password_env.is_some() && upstream.password_file.is_some() {
                return Err(self.invalid(
                    key("password_env"),
                    "set password_env or password_file, not both",
                ));
            }
            if upstream.tls == UpstreamTlsMode::VerifyFull && upstream.ca_file.is_none() {
                return Err(self.invalid(key("ca_file"), "tls = \"verify-full\" needs ca_file"));
            }
        }
        Ok(())
    }

    /// The upstream serving the client-visible database `name`.
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.database == name)
    }

    /// Reads each upstream's password from its environment variable or file, so a missing
    /// secret stops the gateway at start rather than at the first login.
    pub fn load_upstream_secrets(&self) -> Result<Vec<Option<String>>, ConfigError> {
        self.upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| {
                if let Some(var) = &u.password_env {
                    std::env::var(var).map(Some).map_err(|_| {
                        self.invalid(
                            format!("upstream[{i}].password_env"),
                            format!("environment variable {var} is not set"),
                        )
                    })
                } else if let Some(path) = &u.password_file {
                    std::fs::read_to_string(path)
                        .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_owned()))
                        .map_err(|e| {
                            self.invalid(
                                format!("upstream[{i}].password_file"),
                                format!("cannot read {}: {e}", path.display()),
                            )
                        })
                } else {
                    Ok(None)
                }
            })
            .collect()
    }
}

/// Where and as whom the gateway logs in upstream, parsed from `upstream.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
}

impl UpstreamTarget {
    /// Parses `postgres://user@host:port/dbname`. A password in the URL is refused: secrets
    /// belong in `password_env` or `password_file`, not in a file that gets shared and logged.
    pub fn parse(url: &str) -> Result<UpstreamTarget, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err("scheme must be postgres://".into());
        }
        if parsed.password().is_some() {
            return Err("must not contain a password; use password_env or password_file".into());
        }
        let user = percent_decode(parsed.username());
        if user.is_empty() {
            return Err("must name the user, as in postgres://user@host/db".into());
        }
        let host = parsed
            .host_str()
            .ok_or("must name a host")?
            .trim_matches(['[', ']'])
            .to_owned();
        let database = percent_decode(parsed.path().trim_start_matches('/'));
        if database.is_empty() {
            return Err("must name the database, as in postgres://user@host/db".into());
        }
        Ok(UpstreamTarget {
            host,
            port: parsed.port().unwrap_or(5432),
            user,
            database,
        })
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[server]
listen = "127.0.0.1:6433"
data_dir = "./data"
[identity]
signing_key = "./data/signing.pem"
[[upstream]]
database = "app"
url = "postgres://sluice_gw@127.0.0.1:5432/app"
password_env = "SLUICE_UPSTREAM_PASSWORD"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/sluice/sluice.toml"))
    }

    #[test]
    fn minimal_config_gets_defaults_and_paths_relative_to_the_file() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.server.data_dir, Path::new("/etc/sluice/./data"));
        assert_eq!(config.tls.mode, ClientTlsMode::Require);
        assert_eq!(config.upstreams[0].tls, UpstreamTlsMode::Prefer);
        assert_eq!(config.identity.max_ttl, Duration::from_secs(3600));
    }

    #[test]
    fn unknown_key_is_an_error_naming_file_and_key() {
        let err = parse(&format!("{MINIMAL}\n[admin]\nlisten_addr = \"x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/sluice/sluice.toml"), "{err}");
        assert!(err.contains("listen_addr"), "{err}");
    }

    #[test]
    fn approvals_default_route_and_state_path() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.approvals.approver_groups, ["approvers"]);
        assert_eq!(config.approvals.timeout, Duration::from_secs(300));
        assert_eq!(
            config.state_path().unwrap(),
            Path::new("/etc/sluice/./data/state.db")
        );
        let text = format!("{MINIMAL}\n[state]\nurl = \"postgres://x\"\n");
        assert!(parse(&text).unwrap_err().to_string().contains("state.url"));
    }

    #[test]
    fn webhooks_must_be_http_urls_and_errors_do_not_echo_them() {
        let text = format!(
            "{MINIMAL}\n[approvals]\nwebhooks = [\"https://hooks.example/ok\", \"ftp://h/secret-token\"]\n"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("approvals.webhooks"), "{err}");
        assert!(!err.contains("secret-token"), "{err}");
    }

    #[test]
    fn password_in_upstream_url_is_refused() {
        let text = MINIMAL.replace("sluice_gw@", "sluice_gw:hunter2@");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("upstream[0].url"), "{err}");
        assert!(
            !err.contains("hunter2"),
            "the error must not echo the secret: {err}"
        );
    }

    #[test]
    fn verify_full_without_ca_file_is_refused() {
        let text = MINIMAL.replace(
            "password_env = \"SLUICE_UPSTREAM_PASSWORD\"",
            "tls = \"verify-full\"",
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("upstream[0].ca_file"), "{err}");
    }

    #[test]
    fn bad_duration_names_the_key() {
        let text = MINIMAL.replace(
            "signing_key = \"./data/signing.pem\"",
            "signing_key = \"k\"\nmax_ttl = \"soon\"",
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("max_ttl"), "{err}");
    }

    #[test]
    fn upstream_url_parts_are_parsed() {
        let t = UpstreamTarget::parse("postgres://gw%40x@[::1]:6543/my%20db").unwrap();
        assert_eq!(t.user, "gw@x");
        assert_eq!(t.host, "::1");
        assert_eq!(t.port, 6543);
        assert_eq!(t.database, "my db");
    }
}
