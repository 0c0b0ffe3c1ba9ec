//! `[mcp]`: the agent front door, an MCP server (Streamable HTTP) whose tools run statements
//! through the same guard as the Postgres listener.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// Where the MCP server listens (`/mcp`); absent, no MCP server runs.
    pub listen: Option<SocketAddr>,
    /// This server's URL as MCP clients reach it (for the protected resource metadata);
    /// default `http://<listen>`.
    pub public_url: Option<url::Url>,
    /// Where clients get tokens: the admin listener's URL as clients reach it (its
    /// `/v1/token`); default: none advertised.
    pub authorization_server: Option<url::Url>,
    /// Rows a `query` returns at most (the answer says `truncated`).
    #[serde(default = "default_row_limit")]
    pub row_limit: usize,
    /// HTTP connections open at once; more wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Bytes of values (and notices) a `query` returns at most; rows past it are dropped and
    /// the answer says `truncated`.
    #[serde(default = "default_result_bytes")]
    pub max_result_bytes: usize,
    /// An MCP client's database session unused for this long is closed (a transaction left
    /// open in it is rolled back).
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
}

fn default_max_connections() -> usize {
    256
}

fn default_result_bytes() -> usize {
    4 << 20
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_row_limit() -> usize {
    1000
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            listen: None,
            public_url: None,
            authorization_server: None,
            row_limit: default_row_limit(),
            max_connections: default_max_connections(),
            max_result_bytes: default_result_bytes(),
            idle_timeout: default_idle_timeout(),
        }
    }
}
