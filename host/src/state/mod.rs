//! Durable state shared by the gateway's services: approval requests, their votes and the
//! scoped grants approvers hand out. Behind a trait so that several gateway replicas can share
//! one PostgreSQL store later; SQLite in `data_dir` is the default for a single node.

mod sqlite;
mod store;

pub use sqlite::SqliteStore;
pub use store::{
    ApprovalRecord, ApprovalRequest, ApprovalStore, ScopedGrant, StateError, Status, Vote,
};
