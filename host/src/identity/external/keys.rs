//! One issuer's signing keys, fetched from its JWKS (found by OIDC discovery, named by URL, or
//! read from a file) and cached. A token naming a key the cache does not have causes a fetch at
//! most once per `refetch_cooldown`, so a flood of made-up key ids costs the provider nothing;
//! keys are read again every [`REFRESH`] to follow rotation, and kept while the provider cannot
//! be reached for up to `max_stale`. Symmetric keys in a JWKS are never used (a public key must
//! never become an HMAC secret), nor keys marked for encryption.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio_rustls::TlsConnector;

use super::error::ExternalTokenError;

/// How often keys are read again when tokens keep coming.
pub const REFRESH: Duration = Duration::from_secs(15 * 60);
/// Largest discovery document or JWKS read.
const MAX_DOCUMENT: usize = 256 * 1024;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the keys are.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `{issuer}/.well-known/openid-configuration`, then its `jwks_uri`.
    Discovery(url::Url),
    Url(url::Url),
    File(PathBuf),
}

/// A usable key: its verifier and, when the JWKS says, the one algorithm it is for.
pub struct Key {
    pub decoding: DecodingKey,
    pub algorithm: Option<Algorithm>,
}

#[derive(Default)]
struct Cached {
    keys: HashMap<String, Arc<Key>>,
    /// Keys without a `kid`, usable only by tokens without one.
    unnamed: Vec<Arc<Key>>,
    /// The last successful fetch.
    fetched: Option<Instant>,
    /// The last fetch attempted, successful or not.
    attempted: Option<Instant>,
}

pub struct KeyCache {
    issuer: String,
    source: KeySource,
    tls: TlsConnector,
    cooldown: Duration,
    max_stale: Duration,
    cached: Mutex<Cached>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl KeyCache {
    pub fn new(
        issuer: &str,
        source: KeySource,
        tls: TlsConnector,
        cooldown: Duration,
        max_stale: Duration,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> KeyCache {
        KeyCache {
            issuer: issuer.to_owned(),
            source,
            tls,
            cooldown,
            max_stale,
            cached: Mutex::new(Cached::default()),
            fetching: tokio::sync::Mutex::new(()),
            metrics,
        }
    }

    /// The key a token names (`kid`, or none), fetching the keys when they were never read, are
    /// due for a refresh, or lack the key (at most once per cooldown).
    pub async fn key(&self, kid: Option<&str>) -> Result<Arc<Key>, ExternalTokenError> {
        let (found, due) = self.look(kid);
        if let Some(key) = found.clone().filter(|_| !due) {
            return Ok(key);
        }
        // Fetch only if allowed; otherwise answer from what is cached. A caller holding the
        // key does not wait behind a refresh another caller is making.
        if self.may_fetch(found.is_none()) {
            let one = match found {
                Some(_) => self.fetching.try_lock().ok(),
                None => Some(self.fetching.lock().await),
            };
            // Another caller may have fetched meanwhile.
            if one.is_some() && self.may_fetch(self.look(kid).0.is_none()) {
                self.fetch().await;
            }
        }
        let (found, _) = self.look(kid);
        let usable = {
            let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
            cached
                .fetched
                .is_some_and(|at| at.elapsed() <= self.max_stale)
        };
        match found {
            Some(key) if usable => Ok(key),
            Some(_) => Err(ExternalTokenError::KeysUnavailable(format!(
                "the keys of {} are older than max_stale and cannot be fetched",
                self.issuer
            ))),
            None => Err(ExternalTokenError::UnknownKey),
        }
    }

    /// The key, and whether the cache is due for a refresh.
    fn look(&self, kid: Option<&str>) -> (Option<Arc<Key>>, bool) {
        let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        let found = match kid {
            Some(kid) => cached.keys.get(kid).cloned(),
            // Without a kid, only an issuer with exactly one unnamed key is unambiguous.
            None if cached.unnamed.len() == 1 => cached.unnamed.first().cloned(),
            None => None,
        };
        let due = cached.fetched.is_none_or(|at| at.elapsed() > REFRESH);
        (found, due)
    }

    /// Whether a fetch may start now: never fetched, due for a refresh, or (for a missing key)
    /// the cooldown since the last attempt is over.
    fn may_fetch(&self, missing: bool) -> bool {
        let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        let Some(attempted) = cached.attempted else {
            return true;
        };
        let since = attempted.elapsed();
        let refresh_due = cached.fetched.is_none_or(|at| at.elapsed() > REFRESH);
        since >= self.cooldown && (missing || refresh_due)
    }

    async fn fetch(&self) {
        self.metrics
            .jwks_fetches
            .get_or_create(&crate::metrics::IssuerLabels {
                issuer: self.issuer.clone(),
            })
            .inc();
        let result = self.read().await;
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        cached.attempted = Some(Instant::now());
        match result {
            Ok((keys, unnamed)) => {
                tracing::debug!(issuer = %self.issuer, keys = keys.len() + unnamed.len(), "issuer keys read");
                cached.keys = keys;
                cached.unnamed = unnamed;
                cached.fetched = Some(Instant::now());
            }
            Err(why) => {
                tracing::warn!(issuer = %self.issuer, error = %why, "issuer keys could not be read; keeping the ones cached");
            }
        }
    }

    async fn read(&self) -> Result<(HashMap<String, Arc<Key>>, Vec<Arc<Key>>), String> {
        let text = match &self.source {
            KeySource::File(path) => {
                std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?
            }
            KeySource::Url(url) => self.get(url).await?,
            KeySource::Discovery(issuer) => {
                if !secure(issuer) {
                    return Err(format!(
                        "{issuer}: discovery needs https (plain http only on a loopback address)"
                    ));
                }
                let mut at = issuer.clone();
                let path = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.path().trim_end_matches('/')
                );
                at.set_path(&path);
                let document: serde_json::Value = serde_json::from_slice(&self.get(&at).await?)
                    .map_err(|e| format!("discovery document: {e}"))?;
                // OpenID Connect Discovery 1.0, 4.3: the document is the issuer's own.
                let named = document["issuer"].as_str().unwrap_or_default();
                if named.trim_end_matches('/') != issuer.as_str().trim_end_matches('/') {
                    return Err(format!(
                        "the discovery document names issuer \"{named}\", not {issuer}"
                    ));
                }
                let jwks_uri = document["jwks_uri"]
                    .as_str()
                    .ok_or("the discovery document has no jwks_uri")?;
                let jwks_uri =
                    url::Url::parse(jwks_uri).map_err(|e| format!("jwks_uri {jwks_uri}: {e}"))?;
                if !secure(&jwks_uri) {
                    return Err(format!(
                        "jwks_uri {jwks_uri} needs https (plain http only on a loopback address)"
                    ));
                }
                self.get(&jwks_uri).await?
            }
        };
        if text.len() > MAX_DOCUMENT {
            return Err(format!("the JWKS is larger than {MAX_DOCUMENT} bytes"));
        }
        let set: JwkSet = serde_json::from_slice(&text).map_err(|e| format!("JWKS: {e}"))?;
        let (mut keys, mut unnamed) = (HashMap::new(), Vec::new());
        for jwk in &set.keys {
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_))
                || matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption))
            {
                continue;
            }
            let algorithm = match jwk.common.key_algorithm {
                None => None,
                Some(declared) => match signing_algorithm(declared) {
                    Some(a) => Some(a),
                    // A key declared for something else verifies nothing.
                    None => continue,
                },
            };
            let Ok(decoding) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let key = Arc::new(Key {
                decoding,
                algorithm,
            });
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.insert(kid.clone(), key);
                }
                None => unnamed.push(key),
            }
        }
        Ok((keys, unnamed))
    }

    async fn get(&self, url: &url::Url) -> Result<Vec<u8>, String> {
        crate::web::get(url, None, &self.tls, MAX_DOCUMENT, FETCH_TIMEOUT)
            .await
            .map(|b| b.to_vec())
            .map_err(|e| format!("{url}: {e}"))
    }
}

/// Whether keys may be read from `url` without an explicit operator choice: https, or http to
/// this machine.
fn secure(url: &url::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => matches!(
            url.host(),
            Some(url::Host::Domain("localhost"))
                | Some(url::Host::Ipv4(std::net::Ipv4Addr::LOCALHOST))
                | Some(url::Host::Ipv6(std::net::Ipv6Addr::LOCALHOST))
        ),
        _ => false,
    }
}

/// The asymmetric signature algorithm a JWK declares, if it is one the gateway verifies.
fn signing_algorithm(declared: KeyAlgorithm) -> Option<Algorithm> {
    Some(match declared {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::secure;

    #[test]
    fn keys_are_read_over_https_or_from_this_machine_only() {
        let ok = |u: &str| secure(&url::Url::parse(u).unwrap());
        assert!(ok("https://token.actions.githubusercontent.com"));
        assert!(ok("http://127.0.0.1:8080/idp"));
        assert!(ok("http://localhost/idp"));
        assert!(ok("http://[::1]:9000/"));
        assert!(!ok("http://idp.example.com"));
        assert!(!ok("http://10.0.0.1/"));
        assert!(!ok("ftp://127.0.0.1/"));
    }
}
