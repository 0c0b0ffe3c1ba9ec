//! What the state store keeps (approval requests, votes, scoped grants) and the trait every
//! backend implements.

use std::time::{Duration, SystemTime};

/// A statement, or a request for access, waiting for a human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRequest {
    pub id: String,
    pub session_id: u64,
    pub subject: String,
    pub groups: Vec<String>,
    pub database: String,
    pub statement: String,
    pub parameters: Vec<Option<String>>,
    /// The statements of the session before it that changed what names mean (`search_path`,
    /// the role).
    pub settings: Vec<String>,
    pub fingerprint: u64,
    /// The policy plugin that asked for approval, and why.
    pub plugin: String,
    pub reason: String,
    /// Who may decide (any of these groups), and how many distinct approvers it takes.
    pub approver_groups: Vec<String>,
    pub approvals_needed: u32,
    /// The approval plugin that routed the request (`None`: the `[approvals]` default route).
    pub routed_by: Option<String>,
    /// The routing plugin's text for notifications and the approvers' page.
    pub note: Option<String>,
    pub created: SystemTime,
    pub expires: SystemTime,
    /// Set for a request for access (a token the exchange issues once approved): `subject`,
    /// `groups` and `database` are then what the token will carry, `statement` is empty,
    /// `plugin` and `reason` are the access plugin that asked for approval and why.
    pub access: Option<AccessAsk>,
    /// For a request for access: the SHA-256 (hex) of the secret its requester collects the
    /// token with. The id is shown to approvers, webhooks and logs; the secret only to the
    /// requester.
    pub collect_hash: Option<String>,
}

/// What a request for access asks for, beyond who, which database and which groups.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccessAsk {
    /// The trusted issuer's configured name, and its `iss`.
    pub issuer: String,
    pub issuer_url: String,
    /// Who acts for the subject (an agent for a person), when an actor token came with it.
    pub actor: Option<Actor>,
    /// The lifetime the token will have.
    pub lifetime_secs: u64,
    pub read_only: bool,
    /// Why, in the requester's words.
    pub reason: String,
}

/// The party acting for a token's subject (RFC 8693 `act`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Actor {
    pub principal: String,
    /// The trusted issuer's configured name, and its `iss`.
    pub issuer: String,
    pub issuer_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Expired,
    /// The client went away or cancelled before a decision.
    Withdrawn,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
            Status::Withdrawn => "withdrawn",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "pending" => Status::Pending,
            "approved" => Status::Approved,
            "denied" => Status::Denied,
            "expired" => Status::Expired,
            "withdrawn" => Status::Withdrawn,
            _ => return None,
        })
    }
}

/// One approver's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    pub approver: String,
    pub approve: bool,
    pub reason: Option<String>,
    pub at: SystemTime,
    /// On approval: also let this subject run statements of this fingerprint for this long.
    pub scope: Option<Duration>,
}

/// A request with everything decided about it so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRecord {
    pub request: ApprovalRequest,
    pub status: Status,
    pub votes: Vec<Vote>,
    pub decided: Option<SystemTime>,
    /// For an approved request for access: when its token was handed to the requester.
    pub delivered: Option<SystemTime>,
}

/// Permission to run statements of one fingerprint without asking again, until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopedGrant {
    pub subject: String,
    pub database: String,
    pub fingerprint: u64,
    pub until: SystemTime,
    /// The request whose approval created it.
    pub request_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state store holds an unreadable record: {0}")]
    Corrupt(String),
    #[error("no approval request {0}")]
    UnknownRequest(String),
    #[error("approval request {id} is already {status}")]
    Closed { id: String, status: &'static str },
    #[error("{approver} has already voted on approval request {id}")]
    AlreadyVoted { id: String, approver: String },
    #[error("{subject} already has {max} requests waiting for approval")]
    TooManyPending { subject: String, max: usize },
}

/// Where approvals live. Every method is one transaction, so replicas sharing a store never
/// count a vote twice or decide a request two ways.
pub trait ApprovalStore: Send + Sync {
    fn insert_request(&self, request: &ApprovalRequest) -> Result<(), StateError>;

    fn request(&self, id: &str) -> Result<Option<ApprovalRecord>, StateError>;

    /// Marks requests still pending at `now` past their expiry as expired, and returns them.
    /// A held statement's session does this itself when it stops waiting; nobody waits on a
    /// request for access.
    fn expire_stale(&self, now: SystemTime) -> Result<Vec<ApprovalRecord>, StateError>;

    /// Requests still waiting, oldest first.
    fn pending(&self) -> Result<Vec<ApprovalRecord>, StateError>;

    /// Requests decided (or ended) since `since`, newest first, at most `limit`.
    fn decided_since(
        &self,
        since: SystemTime,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StateError>;

    /// Inserts `request` unless its subject already has `max` requests waiting (0: no limit),
    /// counting and inserting in one transaction: concurrent requests cannot all slip under
    /// the limit.
    fn insert_within_limit(&self, request: &ApprovalRequest, max: usize) -> Result<(), StateError>;

    /// Adds a vote and decides the request when it settles it: one refusal denies, the
    /// `approvals_needed`-th distinct approval approves (and records a scoped grant if that
    /// vote asks for one). A request past its expiry is marked expired instead.
    fn vote(&self, id: &str, vote: &Vote) -> Result<ApprovalRecord, StateError>;

    /// Ends a pending request without a decision (`Expired` or `Withdrawn`); a request already
    /// decided keeps its decision, which is returned.
    fn close(&self, id: &str, status: Status, at: SystemTime)
    -> Result<ApprovalRecord, StateError>;

    /// Marks an approved request for access whose collection secret hashes to `collect_hash`
    /// as delivered; `true` only for the one call that does so (the token is handed out once).
    fn deliver(&self, id: &str, collect_hash: &str, at: SystemTime) -> Result<bool, StateError>;

    /// A grant covering `fingerprint` for `subject` on `database` at `now`, if any.
    fn grant_for(
        &self,
        subject: &str,
        database: &str,
        fingerprint: u64,
        now: SystemTime,
    ) -> Result<Option<ScopedGrant>, StateError>;
}
