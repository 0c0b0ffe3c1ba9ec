//! `[[upstream]]`: the databases the gateway serves and how it reaches and logs in to them.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

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
    /// Postgres roles sessions log in as, by the token's groups: a session whose token carries
    /// one of a role's `groups` logs in as that role (the first such role listed), so
    /// `current_user`, Postgres' own logs, privileges and row-level security see it. Without
    /// one, sessions log in as the URL's user.
    #[serde(default)]
    pub roles: Vec<UpstreamRoleConfig>,
    /// With `roles`: a session whose token no role is mapped to logs in as the URL's user
    /// (default: it is refused, so that a token that drops its groups gains nothing).
    #[serde(default)]
    pub url_user_for_unmapped: bool,
    /// Connections kept open, reset with `DISCARD ALL`, after sessions that end at rest, for
    /// the next session of the same token with exactly the same login (role, settings); zero:
    /// none.
    #[serde(default = "default_warm_connections")]
    pub warm_connections: usize,
    /// How long a warm connection waits for such a session before it is closed.
    #[serde(default = "default_warm_idle_timeout", with = "humantime_serde")]
    pub warm_idle_timeout: Duration,
}

/// `[[upstream.roles]]`: one role sessions may log in as.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamRoleConfig {
    /// The Postgres role (it must be able to log in).
    pub name: String,
    /// Token groups mapped to it.
    pub groups: Vec<String>,
    /// Its password, from the environment or a file (none: the server does not ask).
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
}

fn default_warm_connections() -> usize {
    16
}

fn default_warm_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
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
