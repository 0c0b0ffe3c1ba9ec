//! `[admin.sign_in]`: approvers sign in to the approvals page through an OpenID Connect
//! provider (authorization code with PKCE) instead of pasting a token.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::issuers::IssuerConfig;

/// Where the provider sends people back, under the admin listener.
pub const CALLBACK_PATH: &str = "/approvals/callback";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInConfig {
    /// The `[[identity.issuers]]` entry (by `name`) people sign in with: its keys, algorithms,
    /// principal template, `groups_claim`/`allowed_groups` and `subjects` apply to the ID
    /// token, and its `audience` is this gateway's OAuth client id.
    pub issuer: String,
    /// This listener's `/approvals/callback` as browsers reach it (registered with the
    /// provider): https, or http on a loopback address.
    pub redirect_url: url::Url,
    /// A confidential client's secret, from a file (trailing whitespace dropped); absent: a
    /// public client (PKCE alone).
    pub client_secret_file: Option<PathBuf>,
    /// Scopes asked for (`openid` is always asked).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// How long a sign-in lasts.
    #[serde(default = "default_session_ttl", with = "humantime_serde")]
    pub session_ttl: Duration,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "email".into()]
}

fn default_session_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}

impl SignInConfig {
    /// Checks it against the configured issuers: `(key, message)` of the first problem.
    pub(super) fn check(&self, issuers: &[IssuerConfig]) -> Result<(), (String, String)> {
        let bad = |field: &str, message: String| Err((format!("admin.sign_in.{field}"), message));
        if !issuers.iter().any(|i| i.name == self.issuer) {
            return bad(
                "issuer",
                format!("{} names no [[identity.issuers]] entry", self.issuer),
            );
        }
        let url = &self.redirect_url;
        let loopback = url.host().is_some_and(|h| match h {
            url::Host::Ipv4(ip) => ip.is_loopback(),
            url::Host::Ipv6(ip) => ip.is_loopback(),
            url::Host::Domain(d) => d == "localhost",
        });
        if !(url.scheme() == "https" || url.scheme() == "http" && loopback) {
            return bad(
                "redirect_url",
                "must be https (or http on a loopback address): the session cookie is Secure"
                    .into(),
            );
        }
        if url.path() != CALLBACK_PATH {
            return bad("redirect_url", format!("its path must be {CALLBACK_PATH}"));
        }
        if self.session_ttl.is_zero() {
            return bad("session_ttl", "must be longer than zero".into());
        }
        Ok(())
    }
}
