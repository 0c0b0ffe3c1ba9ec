//! Sign-ins in progress and signed-in approvers, in memory: a sign-in is bound to the browser
//! that started it (its `state` in a cookie only that browser holds), lasts ten minutes and is
//! used once; a session is a random id in an `HttpOnly`, `Secure`, `SameSite=Strict` cookie
//! with its own CSRF token, and ends at `session_ttl` or at sign-out. A restart signs everyone
//! out.

use std::time::{Duration, Instant};

use base64::Engine as _;
use dashmap::DashMap;
use ring::rand::SecureRandom as _;

/// How long a sign-in may take at the provider.
const SIGN_IN_WINDOW: Duration = Duration::from_secs(600);
/// Sign-ins in progress kept at once: a flood of abandoned ones cannot grow memory without end.
const MAX_IN_PROGRESS: usize = 10_000;

/// The cookie carrying a signed-in approver's session id.
pub const SESSION_COOKIE: &str = "sluice_session";
/// The cookie binding a sign-in in progress to its browser.
pub const SIGN_IN_COOKIE: &str = "sluice_sign_in";
/// The header a signed-in page sends its CSRF token in with every change.
pub const CSRF_HEADER: &str = "x-sluice-csrf";

/// A sign-in started here: what the callback needs to finish it.
pub struct InProgress {
    /// PKCE (RFC 7636): the verifier whose S256 challenge went to the provider.
    pub verifier: String,
    /// The ID token must carry it back (replay of another sign-in's token fails).
    pub nonce: String,
    started: Instant,
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

#[derive(Default)]
pub struct Sessions {
    in_progress: DashMap<String, InProgress>,
    live: DashMap<String, Session>,
}

/// 256 random bits, URL-safe.
pub fn random() -> String {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The S256 PKCE challenge of `verifier`.
pub fn challenge(verifier: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

impl Sessions {
    /// Starts a sign-in: its `state`, and what goes to the provider with it. `None` when too
    /// many are in progress.
    pub fn start(&self) -> Option<(String, &'static str, String, String)> {
        self.in_progress
            .retain(|_, p| p.started.elapsed() < SIGN_IN_WINDOW);
        if self.in_progress.len() >= MAX_IN_PROGRESS {
            return None;
        }
        let (state, verifier, nonce) = (random(), random(), random());
        let challenge = challenge(&verifier);
        self.in_progress.insert(
            state.clone(),
            InProgress {
                verifier,
                nonce: nonce.clone(),
                started: Instant::now(),
            },
        );
        Some((state, "S256", challenge, nonce))
    }

    /// The sign-in `state` names, once, while it is fresh.
    pub fn finish(&self, state: &str) -> Option<InProgress> {
        self.in_progress
            .remove(state)
            .map(|(_, p)| p)
            .filter(|p| p.started.elapsed() < SIGN_IN_WINDOW)
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

/// Equal strings, compared in time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sign_in_finishes_once_and_a_session_ends_when_closed() {
        let sessions = Sessions::default();
        let (state, method, challenge, _) = sessions.start().unwrap();
        assert_eq!(method, "S256");
        let progress = sessions.finish(&state).unwrap();
        assert_eq!(super::challenge(&progress.verifier), challenge);
        assert!(sessions.finish(&state).is_none(), "used once");
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
