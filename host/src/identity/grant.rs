use std::time::SystemTime;

/// What a valid token allows: one subject, one database, until one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Who is acting (the token's `sub`); also the startup `user` the client must send.
    pub subject: String,
    /// The client-visible database the token is for (`db`).
    pub database: String,
    /// Group memberships carried by the token, for policies.
    pub groups: Vec<String>,
    /// The token's unique id (`jti`), for audit and revocation.
    pub token_id: String,
    /// Who issued the token (`iss`), for revocation.
    pub issuer: String,
    /// For a token issued in exchange for an external one: that one's issuer (`idp`).
    pub origin: Option<String>,
    /// And that token's `jti`.
    pub origin_token_id: Option<String>,
    /// A read-only grant.
    pub read_only: bool,
    /// Who acts for the subject (`act`), for a token issued to an agent acting for someone.
    pub actor: Option<Act>,
    /// For a token an operator minted with the signing key (`sluice token mint`): who and why.
    pub minted: Option<Minted>,
    /// When the session must end (`exp`).
    pub expires_at: SystemTime,
}

/// The acting party of a token (RFC 8693 section 4.1): an agent acting for the subject.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Act {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The actor's token's own `jti`: revoking it revokes this token too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// An operator's break-glass mint (`sluice token mint`), as the token records it: the standing
/// key was used, by whom (the operating-system user and host) and why.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Minted {
    pub by: String,
    pub reason: String,
}
