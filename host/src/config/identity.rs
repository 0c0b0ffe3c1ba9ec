//! `[identity]`: how the gateway's own tokens are minted and checked.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

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
    /// External identity providers whose tokens may be exchanged for the gateway's own.
    #[serde(default)]
    pub issuers: Vec<super::issuers::IssuerConfig>,
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
