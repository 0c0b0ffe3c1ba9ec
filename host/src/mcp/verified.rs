//! Sluice tokens already verified, by digest: an MCP client sends its token with every HTTP
//! request, and checking an Ed25519 signature is most of what the door would otherwise spend
//! on one. A hit is the same bytes the gateway's key signed, still unexpired; revocation is
//! checked on every request all the same.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::identity::Claims;

/// Tokens remembered at most; a full cache starts over (a flood of distinct valid tokens costs
/// the verifications it saves, nothing more).
const CAPACITY: usize = 4096;

#[derive(Default)]
pub struct VerifiedTokens {
    by_digest: Mutex<HashMap<String, Claims>>,
}

impl VerifiedTokens {
    /// The claims of the token with `digest`, if it was verified and has not expired.
    pub fn get(&self, digest: &str) -> Option<Claims> {
        let mut map = self.by_digest.lock().expect("not poisoned");
        let claims = map.get(digest)?;
        if claims.exp > crate::identity::unix_now() {
            return Some(claims.clone());
        }
        map.remove(digest);
        None
    }

    pub fn insert(&self, digest: String, claims: &Claims) {
        let mut map = self.by_digest.lock().expect("not poisoned");
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(digest, claims.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{SigningKey, TokenAuthority};
    use std::time::Duration;

    #[test]
    fn an_expired_token_is_forgotten() {
        let key = SigningKey::generate().unwrap();
        let authority = TokenAuthority::new(
            &key,
            "sluice",
            "sluice",
            Duration::from_secs(3600),
            Duration::ZERO,
        );
        let mut claims = authority.claims_for("agent", "app", Duration::from_secs(60));
        let cache = VerifiedTokens::default();
        cache.insert("live".into(), &claims);
        assert_eq!(cache.get("live").map(|c| c.sub), Some("agent".to_owned()));
        claims.exp = crate::identity::unix_now() - 1;
        cache.insert("stale".into(), &claims);
        assert!(cache.get("stale").is_none());
        assert!(cache.get("unknown").is_none());
    }
}
