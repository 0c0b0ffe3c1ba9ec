//! Sign-ins in progress and signed-in approvers. A sign-in in progress lives only in a cookie
//! of the browser that started it (its `state`, PKCE verifier and nonce, authenticated with a
//! key of this process), so starting sign-ins costs the gateway no memory, and it lasts ten
//! minutes. A session is a random id in an `HttpOnly`, `Secure`, `SameSite=Strict` cookie
//! with its own CSRF token, kept in memory until `session_ttl` or sign-out; a restart signs
//! everyone out.

use std::time::{Duration, Instant};

use base64::Engine as _;
use dashmap::DashMap;

/// How long a sign-in may take at the provider.
const SIGN_IN_WINDOW: Duration = Duration::from_secs(600);

/// The cookie carrying a signed-in approver's session id.
pub const SESSION_COOKIE: &str = "__Host-sluice_session";
/// The cookie binding a sign-in in progress to its browser.
pub const SIGN_IN_COOKIE: &str = "__Secure-sluice_sign_in";
/// The header a signed-in page sends its CSRF token in with every change.
pub const CSRF_HEADER: &str = "x-sluice-csrf";

/// A sign-in started here: what the callback needs to finish it.
pub struct InProgress {
    /// PKCE (RFC 7636): the verifier whose S256 challenge went to the provider.
    pub verifier: String,
    /// The ID token must carry it back (replay of another sign-in's token fails).
    pub nonce: String,
}

/// What goes to the provider and into the browser when a sign-in starts.
pub struct Started {
    /// The sign-in cookie's value.
    pub cookie: String,
    pub state: String,
    pub challenge: String,
    pub nonce: String,
}

/// A signed-in approver.
#[derive(Debug, Clone)]
pub struct Session {
    pub subject: String,
    pub groups: Vec<String>,
    /// The provider's `iss`, for revocations.
    pub issuer: String,
    pub csrf: String,
    pub expires: Instant,
}

pub struct Sessions {
    /// Authenticates sign-in cookies; new at every start of the gateway.
    key: ring::hmac::Key,
    live: DashMap<String, Session>,
}

impl Default for Sessions {
    fn default() -> Self {
        let rng = ring::rand::SystemRandom::new();
        Sessions {
            key: ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
                .expect("the system's random source works"),
            live: DashMap::new(),
        }
    }
}

pub use crate::secret::{random, same};

/// The S256 PKCE challenge of `verifier`.
pub fn challenge(verifier: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

impl Sessions {
    /// Starts a sign-in.
    pub fn start(&self) -> Started {
        let (state, verifier, nonce) = (random(), random(), random());
        let issued = crate::identity::unix_now();
        let payload = format!("{state}.{verifier}.{nonce}.{issued}");
        let tag = ring::hmac::sign(&self.key, payload.as_bytes());
        Started {
            cookie: format!("{payload}.{}", crate::audit::record::hex(tag.as_ref())),
            challenge: challenge(&verifier),
            state,
            nonce,
        }
    }

    /// The sign-in the browser's `cookie` holds, if it is this gateway's, for `state`, and
    /// fresh.
    pub fn finish(&self, cookie: &str, state: &str) -> Option<InProgress> {
        let (payload, tag) = cookie.rsplit_once('.')?;
        let tag = (0..tag.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(tag.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        ring::hmac::verify(&self.key, payload.as_bytes(), &tag).ok()?;
        let mut parts = payload.split('.');
        let (Some(sent), Some(verifier), Some(nonce), Some(issued)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let issued: u64 = issued.parse().ok()?;
        let fresh = crate::identity::unix_now().saturating_sub(issued) < SIGN_IN_WINDOW.as_secs();
        (same(sent, state) && fresh).then(|| InProgress {
            verifier: verifier.to_owned(),
            nonce: nonce.to_owned(),
        })
    }

    /// A new session; returns its id.
    pub fn open(&self, session: Session) -> String {
        self.live.retain(|_, s| s.expires > Instant::now());
        let id = random();
        self.live.insert(id.clone(), session);
        id
    }

    pub fn get(&self, id: &str) -> Option<Session> {
        let session = self.live.get(id).map(|s| s.clone())?;
        if session.expires <= Instant::now() {
            self.live.remove(id);
            return None;
        }
        Some(session)
    }

    pub fn close(&self, id: &str) {
        self.live.remove(id);
    }
}

/// The value of cookie `name` in `headers`.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sign_in_finishes_only_with_its_own_cookie_and_a_session_ends_when_closed() {
        let sessions = Sessions::default();
        let started = sessions.start();
        let progress = sessions.finish(&started.cookie, &started.state).unwrap();
        assert_eq!(challenge(&progress.verifier), started.challenge);
        assert_eq!(progress.nonce, started.nonce);
        // Another state, a forged cookie, another gateway's cookie: nothing.
        assert!(sessions.finish(&started.cookie, &random()).is_none());
        let forged = started.cookie.replacen(&started.state, &random(), 1);
        assert!(sessions.finish(&forged, &started.state).is_none());
        assert!(
            Sessions::default()
                .finish(&started.cookie, &started.state)
                .is_none()
        );
        let id = sessions.open(Session {
            subject: "alice".into(),
            groups: vec!["dba".into()],
            issuer: "https://idp".into(),
            csrf: random(),
            expires: Instant::now() + Duration::from_secs(60),
        });
        assert_eq!(sessions.get(&id).unwrap().subject, "alice");
        sessions.close(&id);
        assert!(sessions.get(&id).is_none());
    }

    #[test]
    fn the_pkce_challenge_is_rfc_7636s_example() {
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
