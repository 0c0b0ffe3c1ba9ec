//! What the audit log records. Each variant is one record `type`; the fields are the record's
//! own beside the header (`v`, `seq`, `ts`, `prev`). The schema is documented in the README
//! ("Audit log"); fields are only ever added within a schema version.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The first record a gateway writes after it opens the log.
    AuditOpen {
        /// The last record of the previous run was not `audit_close`: it stopped uncleanly.
        unclean: bool,
        /// Bytes of a torn last line removed from the file on open.
        torn_bytes: u64,
    },
    /// The last record of a clean stop.
    AuditClose {},
    /// A signed statement that the chain up to `covers_seq` ends in `covers_hash`.
    Checkpoint {
        covers_seq: u64,
        covers_hash: String,
        /// Hex Ed25519 public key.
        key: String,
        /// Hex signature of [`checkpoint_message`].
        signature: String,
    },
    SessionStart {
        session: u64,
        subject: String,
        groups: Vec<String>,
        token_id: String,
        client_addr: String,
        database: String,
        application_name: Option<String>,
        /// For a token issued in exchange for an external one: that one's issuer (`iss`).
        #[serde(skip_serializing_if = "Option::is_none")]
        idp: Option<String>,
        /// A read-only grant.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        read_only: bool,
        /// Who acts for the subject (the token's `act`), for a token issued to an agent acting
        /// for someone.
        #[serde(skip_serializing_if = "Option::is_none")]
        actor: Option<String>,
        /// For a token an operator minted with the signing key (break-glass): `by` and
        /// `reason`.
        #[serde(skip_serializing_if = "Option::is_none")]
        minted: Option<crate::identity::Minted>,
        /// The door the session came through when it is not the Postgres listener: `mcp`
        /// for the MCP server's sessions.
        #[serde(skip_serializing_if = "Option::is_none")]
        via: Option<&'static str>,
        /// The Postgres backend serving the session (`pg_backend_pid()`, `%p` in Postgres'
        /// logs); a warm connection serves several sessions of one token in turn.
        upstream_pid: i32,
    },
    SessionEnd {
        session: u64,
        subject: String,
        duration_ms: u64,
        statements: u64,
        reason: String,
    },
    LoginFailure {
        client_addr: String,
        user: Option<String>,
        database: Option<String>,
        /// A class (`expired`, `bad-signature`...), never token text.
        reason: String,
        /// `mcp` for a refusal at the MCP server's door (or of a session it opened).
        #[serde(skip_serializing_if = "Option::is_none")]
        via: Option<&'static str>,
        /// At the MCP door: refusals from the same address since its previous record that
        /// were not recorded (one record per address per 10 s).
        #[serde(skip_serializing_if = "Option::is_none")]
        unrecorded: Option<u64>,
    },
    /// A statement text decided before it reaches Postgres (a Query, or a Parse), or one
    /// execution of a prepared statement (a Bind).
    Statement(Box<StatementRecord>),
    /// How a statement that went upstream ended.
    Result {
        session: u64,
        statement: u64,
        /// Which statement of a multi-statement Query (0-based).
        part: u32,
        /// `ok`, `error`, `suspended` (a portal's Execute stopped at its row limit) or
        /// `skipped` (never ran: an earlier error in its query string or pipeline).
        outcome: Outcome,
        /// CommandComplete's tag (`INSERT 0 1`).
        tag: Option<String>,
        /// Rows, from the tag.
        rows: Option<u64>,
        sqlstate: Option<String>,
        duration_us: u64,
    },
    ApprovalRequested {
        id: String,
        session: u64,
        subject: String,
        database: String,
        statement: String,
        plugin: String,
        reason: String,
        approver_groups: Vec<String>,
        approvals_needed: u32,
        routed_by: Option<String>,
        /// For a request for access: the issuer, the actor, the lifetime and grant asked for,
        /// and the requester's reason (`statement` is then empty, `subject` and `database` are
        /// what the token will carry).
        #[serde(skip_serializing_if = "Option::is_none")]
        access: Option<crate::state::AccessAsk>,
    },
    ApprovalDecided {
        id: String,
        /// `approved`, `denied`, `expired`, `withdrawn`.
        status: String,
        /// Who voted, in order, with their vote.
        votes: Vec<VoteRecord>,
    },
    PluginLoaded {
        plugin: String,
        kind: String,
        hash: String,
        priority: i32,
    },
    PluginLoadFailed {
        plugin: String,
        error: String,
        /// Hash of the version that keeps serving, if any.
        kept: Option<String>,
    },
    PluginUnloaded {
        plugin: String,
        hash: String,
    },
    /// A request to exchange an external token for a gateway token (`POST /v1/token`).
    TokenExchange {
        /// The trusted issuer's configured name (absent when the token named none).
        issuer: Option<String>,
        /// Who the external token is, when it was accepted.
        principal: Option<String>,
        /// Who acts for them, when an actor token came with the request and was accepted.
        #[serde(skip_serializing_if = "Option::is_none")]
        actor: Option<String>,
        database: String,
        reason: String,
        /// `issued`; `pending` (an access plugin asked for approval: `approval` names the
        /// request); `denied` (the token was good; the request is not allowed); `refused` (a
        /// token was not accepted, or the gateway could not decide: a plugin failed, the store
        /// is down); `invalid` (a malformed request).
        outcome: &'static str,
        /// Why it was denied or refused.
        why: Option<String>,
        /// The issued token's `jti` and lifetime.
        token_id: Option<String>,
        ttl_seconds: Option<u64>,
        groups: Vec<String>,
        /// The approval request this exchange opened or collected.
        #[serde(skip_serializing_if = "Option::is_none")]
        approval: Option<String>,
    },
    /// An approver signing in to the approvals page through the OIDC provider.
    ApproverSignIn {
        /// The `[[identity.issuers]]` entry signed in with.
        issuer: String,
        /// Who, when the ID token was accepted.
        subject: Option<String>,
        groups: Vec<String>,
        /// `signed_in` or `refused`.
        outcome: &'static str,
        why: Option<String>,
    },
    /// Tokens taken back: every token matching `kind` = `value` is refused, and the sessions
    /// using one end, until `until` (Unix seconds).
    Revocation {
        id: String,
        /// `jti`, `subject` or `issuer`.
        kind: &'static str,
        value: String,
        by: String,
        reason: String,
        until: u64,
    },
    /// A result set masked: which columns, with which mask (never values).
    Masking {
        session: u64,
        /// The statement record the result belongs to, when the audit trail knows it.
        statement: Option<u64>,
        columns: Vec<MaskedColumn>,
        /// Why the plan could not be made and every value was withheld, if so.
        failure: Option<String>,
    },
}

/// One masked column of a result set.
#[derive(Debug, Clone, Serialize)]
pub struct MaskedColumn {
    /// The name the client saw.
    pub name: String,
    /// `schema.table.column` when the column is a plain table column.
    pub source: Option<String>,
    /// `null`, `redact`, `hash`, `partial` or `custom`.
    pub mask: &'static str,
}

/// Which client message a statement record is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// A simple-protocol Query: its text runs.
    Query,
    /// An extended-protocol Parse: its text is prepared, nothing runs.
    Parse,
    /// An extended-protocol Bind: one execution of a prepared statement.
    Bind,
}

impl Protocol {
    /// The name the audit log uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Query => "query",
            Protocol::Parse => "parse",
            Protocol::Bind => "bind",
        }
    }
}

/// How a statement that went upstream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Error,
    Suspended,
    Skipped,
}

impl Outcome {
    /// The name the audit log uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Suspended => "suspended",
            Outcome::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StatementRecord {
    pub session: u64,
    pub subject: String,
    pub database: String,
    /// The statement's number in its session; a `result` refers to it.
    pub statement: u64,
    /// `query` (simple protocol), `parse`, or `bind` (one execution of a prepared statement:
    /// `prepared` names the Parse's number).
    pub protocol: Protocol,
    pub prepared: Option<u64>,
    /// Full or normalized, as `[audit] statement_text` says; absent for a Bind.
    pub text: Option<String>,
    pub kinds: Vec<&'static str>,
    pub tables_read: Vec<String>,
    pub tables_written: Vec<String>,
    #[serde(flatten)]
    pub decided: Decided,
    /// Bind parameter values (text format), with `statement_text = "full"`.
    pub params: Option<Vec<Option<String>>>,
    /// As the session's `session_start` says: `mcp` for a statement an MCP tool call ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<&'static str>,
}

/// The decision a statement record carries, written as its kebab-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// Nothing decided yet: a record is always decided before it is written.
    #[default]
    #[serde(rename = "")]
    Undecided,
    Allow,
    Deny,
    /// A policy asked for approval (the outcome replaces it once people decide).
    Approval,
    Approved,
    ApprovalDenied,
    ApprovalExpired,
    /// The client left or cancelled while the statement waited.
    Withdrawn,
    /// Unparsable, or the audit log or routing failed.
    Error,
}

impl Decision {
    /// The name the audit log and the metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Undecided => "",
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Approval => "approval",
            Decision::Approved => "approved",
            Decision::ApprovalDenied => "approval-denied",
            Decision::ApprovalExpired => "approval-expired",
            Decision::Withdrawn => "withdrawn",
            Decision::Error => "error",
        }
    }
}

/// How a statement text or execution was decided.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Decided {
    pub decision: Decision,
    pub plugin: Option<String>,
    /// SHA-256 of the deciding plugin's component.
    pub plugin_hash: Option<String>,
    pub reason: Option<String>,
    pub approval: Option<String>,
    pub approvers: Vec<String>,
}

impl Decided {
    /// Whether the statement may run.
    pub fn allowed(&self) -> bool {
        matches!(self.decision, Decision::Allow | Decision::Approved)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VoteRecord {
    pub approver: String,
    pub approve: bool,
    pub reason: Option<String>,
    /// A scoped grant given with the approval: the requester may run statements of this
    /// fingerprint for this many seconds.
    pub scope_seconds: Option<u64>,
}

/// What a checkpoint's signature covers.
pub fn checkpoint_message(covers_seq: u64, covers_hash: &str) -> Vec<u8> {
    format!("sluice-audit-checkpoint-v1:{covers_seq}:{covers_hash}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_written_as_the_audit_schema_names_them() {
        for (decision, name) in [
            (Decision::Allow, "allow"),
            (Decision::Deny, "deny"),
            (Decision::Approval, "approval"),
            (Decision::Approved, "approved"),
            (Decision::ApprovalDenied, "approval-denied"),
            (Decision::ApprovalExpired, "approval-expired"),
            (Decision::Withdrawn, "withdrawn"),
            (Decision::Error, "error"),
        ] {
            assert_eq!(decision.as_str(), name);
            assert_eq!(serde_json::to_value(decision).unwrap(), name);
        }
    }
}
