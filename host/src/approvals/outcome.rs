//! What a decided request means for the statement held on it: it runs, or the client gets the
//! refusal the people (or the clock) decided, with the SQLSTATE a client can act on.

use crate::state::{ApprovalRecord, Status};
use crate::wire::backend::Refusal;
use crate::wire::sqlstate;

/// What a decided request means for the held statement: `None` runs it.
pub fn refusal(record: &ApprovalRecord) -> Option<Refusal> {
    let id = &record.request.id;
    let last = record.votes.last();
    let approvers = record
        .votes
        .iter()
        .filter(|v| v.approve)
        .map(|v| v.approver.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    match record.status {
        Status::Approved => {
            tracing::info!(approval = %id, %approvers, "held statement approved");
            None
        }
        Status::Denied => {
            let (who, why) = last.map_or(("?", ""), |v| {
                (v.approver.as_str(), v.reason.as_deref().unwrap_or(""))
            });
            tracing::info!(approval = %id, approver = %who, "held statement denied");
            Some(Refusal::new(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                format!("sluice: approval {id} denied by {who}: {why}"),
            ))
        }
        Status::Expired | Status::Pending | Status::Withdrawn => {
            tracing::info!(approval = %id, "held statement expired");
            Some(Refusal::new(
                sqlstate::QUERY_CANCELED,
                format!(
                    "sluice: approval {id} expired after {} without a decision",
                    humantime::format_duration(pending_timeout(record))
                ),
            ))
        }
    }
}

fn pending_timeout(record: &ApprovalRecord) -> std::time::Duration {
    record
        .request
        .expires
        .duration_since(record.request.created)
        .unwrap_or_default()
}

/// Each vote as the audit record lists it: `approved:<who>` or `denied:<who>`.
pub fn approvers(record: &ApprovalRecord) -> Vec<String> {
    record
        .votes
        .iter()
        .map(|v| {
            format!(
                "{}:{}",
                if v.approve { "approved" } else { "denied" },
                v.approver
            )
        })
        .collect()
}
