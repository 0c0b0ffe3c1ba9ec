//! Who is acting in a session, as established when it logged in: the token's subject, groups
//! and id, the database it was granted, where the client connects from. The audit log, the
//! approval queue and the plugins all describe the session with it (plugins receive it in the
//! contract's form, `plugins::convert::session`, once per instance).

/// One session's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Gateway-local session number.
    pub id: u64,
    /// The token's subject: the real identity behind the connection.
    pub subject: String,
    /// Groups carried by the token.
    pub groups: Vec<String>,
    /// The database as the client named it.
    pub database: String,
    /// The token's unique id (`jti`).
    pub token_id: String,
    /// Client address, `ip:port`.
    pub client_addr: String,
    /// The client's `application_name`, if it sent one.
    pub application_name: Option<String>,
    /// For a token issued in exchange for an external one: that one's issuer.
    pub idp: Option<String>,
    /// The grant is read-only: Postgres runs the session with `default_transaction_read_only`
    /// on, and nothing may turn it off.
    pub read_only: bool,
    /// Who acts for the subject (the token's `act`): an agent acting for a person.
    pub actor: Option<String>,
    /// For an operator's break-glass token: who minted it and why.
    pub minted: Option<super::grant::Minted>,
    /// The door the session came through when it is not the Postgres listener (`mcp`).
    pub via: Option<&'static str>,
}
