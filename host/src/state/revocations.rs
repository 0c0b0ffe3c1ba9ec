//! What the state store keeps of revocations: which tokens are refused, until when, by whom
//! and why. Kept in the store so that a revocation survives a restart and reaches every gateway
//! sharing the store.

use std::time::SystemTime;

use super::store::StateError;

/// What a revocation matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// One token, by its `jti`.
    Token(String),
    /// Every token of a subject (the token's `sub`).
    Subject(String),
    /// Every token from an issuer (the token's `iss`).
    Issuer(String),
}

impl Revoked {
    /// The kind as stored and shown: `jti`, `subject` or `issuer`.
    pub fn kind(&self) -> &'static str {
        match self {
            Revoked::Token(_) => "jti",
            Revoked::Subject(_) => "subject",
            Revoked::Issuer(_) => "issuer",
        }
    }

    pub fn value(&self) -> &str {
        match self {
            Revoked::Token(v) | Revoked::Subject(v) | Revoked::Issuer(v) => v,
        }
    }

    pub fn from_parts(kind: &str, value: String) -> Option<Revoked> {
        Some(match kind {
            "jti" => Revoked::Token(value),
            "subject" => Revoked::Subject(value),
            "issuer" => Revoked::Issuer(value),
            _ => return None,
        })
    }
}

/// One revocation: tokens it matches are refused at login, and sessions using them end,
/// until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub id: String,
    pub revoked: Revoked,
    /// Who revoked (the admin token's subject, or `operator` for the CLI on the gateway's host).
    pub by: String,
    pub reason: String,
    pub created: SystemTime,
    pub until: SystemTime,
}

/// Where revocations live.
pub trait RevocationStore: Send + Sync {
    fn insert_revocation(&self, revocation: &Revocation) -> Result<(), StateError>;

    /// Revocations still in force at `now`, oldest first.
    fn revocations(&self, now: SystemTime) -> Result<Vec<Revocation>, StateError>;

    /// Forgets revocations that ended before `now`; returns how many.
    fn prune_revocations(&self, now: SystemTime) -> Result<usize, StateError>;
}
