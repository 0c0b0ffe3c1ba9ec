//! `[server]`, `[tls]`, `[admin]` and `[limits]`: where clients connect, how, and what one
//! connection and one statement may use.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

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

/// `[admin]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the HTTP admin listener; absent, no admin listener runs.
    pub listen: Option<SocketAddr>,
    /// Token groups whose members may revoke tokens (`POST /v1/revocations`).
    #[serde(default = "default_admin_groups")]
    pub admin_groups: Vec<String>,
    /// Approvers sign in to the approvals page through an OIDC provider.
    pub sign_in: Option<super::sign_in::SignInConfig>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: None,
            admin_groups: default_admin_groups(),
            sign_in: None,
        }
    }
}

fn default_admin_groups() -> Vec<String> {
    vec!["sluice-admins".to_owned()]
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
