//! Why an external token was not accepted.

/// Largest external token read.
pub const MAX_TOKEN: usize = 16 * 1024;

/// Why an external token was not accepted. Clients get a generic answer; this is for logs and
/// the audit log (`class`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExternalTokenError {
    #[error("token larger than {MAX_TOKEN} bytes")]
    TooLarge,
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("no trusted issuer {0}")]
    UnknownIssuer(String),
    #[error("algorithm {0} is not accepted from this issuer")]
    Algorithm(String),
    #[error("the token names a key the issuer does not publish")]
    UnknownKey,
    #[error("{0}")]
    KeysUnavailable(String),
    #[error("token signature is not valid")]
    BadSignature,
    #[error("token is expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token audience is not this gateway's")]
    WrongAudience,
    #[error("{0}")]
    NoPrincipal(String),
}

impl ExternalTokenError {
    /// A short, stable name of the failure for logs, metrics and the audit log.
    pub fn class(&self) -> &'static str {
        match self {
            ExternalTokenError::TooLarge => "too_large",
            ExternalTokenError::Malformed(_) => "malformed",
            ExternalTokenError::UnknownIssuer(_) => "unknown_issuer",
            ExternalTokenError::Algorithm(_) => "algorithm_refused",
            ExternalTokenError::UnknownKey => "unknown_key",
            ExternalTokenError::KeysUnavailable(_) => "keys_unavailable",
            ExternalTokenError::BadSignature => "bad_signature",
            ExternalTokenError::Expired => "expired",
            ExternalTokenError::NotYetValid => "not_yet_valid",
            ExternalTokenError::WrongAudience => "wrong_audience",
            ExternalTokenError::NoPrincipal(_) => "no_principal",
        }
    }
}
