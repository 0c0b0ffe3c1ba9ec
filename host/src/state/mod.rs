//! Durable state shared by the gateway's services: approval requests (held statements and
//! requests for access), their votes, the
//! scoped grants approvers hand out, and revocations. Behind a trait so that several gateway replicas can share
//! one PostgreSQL store later; SQLite in `data_dir` is the default for a single node.

mod revocations;
mod sqlite;
mod store;

pub use revocations::{Revocation, RevocationStore, Revoked};
pub use sqlite::SqliteStore;
pub use store::{
    AccessAsk, Actor, ApprovalRecord, ApprovalRequest, ApprovalStore, ScopedGrant, StateError,
    Status, Vote,
};
