//! The gateway's TOML configuration: parsed, resolved against the config file's directory and
//! validated as a whole before anything starts, so a bad file never leaves a half-configured
//! gateway behind.

use std::path::{Path, PathBuf};

use serde::Deserialize;

mod approvals;
mod audit;
mod identity;
mod issuers;
mod mcp;
mod plugins;
mod server;
mod sign_in;
mod upstream;

pub use approvals::{ApprovalsConfig, StateConfig};
pub use audit::{AuditConfig, Durability, OnAuditFailure, StatementText};
pub use identity::IdentityConfig;
pub use issuers::{ISSUER_ALGORITHMS, IssuerConfig, IssuerPreset};
pub use mcp::McpConfig;
pub use plugins::{
    DEFAULT_MAX_COMPONENT_MIB, DEFAULT_MAX_FUNCTIONS, MaskingConfig, PluginsConfig, UserFunctions,
    valid_plugin_name,
};
pub use server::{AdminConfig, ClientTlsMode, LimitsConfig, ServerConfig, TlsConfig};
pub use sign_in::{CALLBACK_PATH, SignInConfig};
pub use upstream::{UpstreamConfig, UpstreamRoleConfig, UpstreamTarget, UpstreamTlsMode};

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
    #[serde(default)]
    pub mcp: McpConfig,
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
            for role in &mut upstream.roles {
                role.password_file.as_mut().map(resolve);
            }
        }
        for issuer in &mut self.identity.issuers {
            issuer.jwks_file.as_mut().map(resolve);
            issuer.ca_file.as_mut().map(resolve);
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
        if self.audit.sync_delay > std::time::Duration::from_secs(1) {
            return Err(self.invalid(
                "audit.sync_delay",
                "at most 1s: it bounds how long a read's record may stay off the disk",
            ));
        }
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
        let databases: Vec<&str> = self.upstreams.iter().map(|u| u.database.as_str()).collect();
        issuers::check(&self.identity.issuers, &databases)
            .map_err(|(key, message)| self.invalid(key, message))?;
        if let Some(sign_in) = &self.admin.sign_in {
            sign_in
                .check(&self.identity.issuers)
                .map_err(|(key, message)| self.invalid(key, message))?;
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
            for (j, role) in upstream.roles.iter().enumerate() {
                let key = |k: &str| format!("upstream[{i}].roles[{j}].{k}");
                if role.name.is_empty() || role.name.contains(['\0', '"']) {
                    return Err(self.invalid(key("name"), "must be a role name"));
                }
                if role.groups.is_empty() {
                    return Err(
                        self.invalid(key("groups"), "must list the token groups mapped to it")
                    );
                }
                if role.password_env.is_some() && role.password_file.is_some() {
                    return Err(self.invalid(
                        key("password_env"),
                        "set password_env or password_file, not both",
                    ));
                }
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
                self.secret(
                    &format!("upstream[{i}]"),
                    u.password_env.as_deref(),
                    u.password_file.as_deref(),
                )
            })
            .collect()
    }

    /// The passwords of upstream `index`'s `[[upstream.roles]]`, in order.
    pub fn load_role_secrets(&self, index: usize) -> Result<Vec<Option<String>>, ConfigError> {
        self.upstreams[index]
            .roles
            .iter()
            .enumerate()
            .map(|(j, r)| {
                self.secret(
                    &format!("upstream[{index}].roles[{j}]"),
                    r.password_env.as_deref(),
                    r.password_file.as_deref(),
                )
            })
            .collect()
    }

    fn secret(
        &self,
        key: &str,
        env: Option<&str>,
        file: Option<&Path>,
    ) -> Result<Option<String>, ConfigError> {
        if let Some(var) = env {
            std::env::var(var).map(Some).map_err(|_| {
                self.invalid(
                    format!("{key}.password_env"),
                    format!("environment variable {var} is not set"),
                )
            })
        } else if let Some(path) = file {
            std::fs::read_to_string(path)
                .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_owned()))
                .map_err(|e| {
                    self.invalid(
                        format!("{key}.password_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
