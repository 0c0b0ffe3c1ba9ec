//! One tool call's statement in its session: wait for the session's turn, run, and on the
//! client's cancellation stop the statement, never leaving the session out of step.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::client::{Answer, ClientError, Limits};
use super::progress::Progress;
use super::sessions::{Caller, Sessions, Slot};

/// What a tool call asks the session to run.
pub struct Statement {
    pub sql: String,
    pub params: Vec<Option<String>>,
}

/// The first wait before a cancel is sent again while the cancelled statement has not ended
/// (one that reached the gateway before the statement did, or before its hold began, finds
/// nothing); each wait doubles, up to [`CANCEL_EVERY_MAX`].
const CANCEL_AGAIN: Duration = Duration::from_millis(200);
const CANCEL_EVERY_MAX: Duration = Duration::from_secs(5);
/// A statement still running this long after its call was cancelled (one that catches
/// `query_canceled`) costs the caller its session: it is closed, and the gateway ends it.
const CANCEL_DEADLINE: Duration = Duration::from_secs(30);

pub async fn run(
    sessions: &Sessions,
    slot: &Slot,
    caller: &Caller,
    statement: &Statement,
    limits: Limits,
    progress: &Progress,
    cancelled: &CancellationToken,
) -> Result<Answer, ClientError> {
    // A call cancelled while it waits for its turn (or for the login) sends nothing.
    let mut lease = tokio::select! {
        biased;
        () = cancelled.cancelled() => return Err(ClientError::Cancelled),
        lease = slot.acquire(&sessions.door, caller, limits.bytes) => lease?,
    };
    if cancelled.is_cancelled() {
        return Err(ClientError::Cancelled);
    }
    let key = lease.session().cancel_key();
    let answer = {
        let run = lease
            .session()
            .run(&statement.sql, &statement.params, limits, |notice| {
                progress.send(notice)
            });
        tokio::pin!(run);
        tokio::select! {
            biased;
            answer = &mut run => answer,
            () = cancelled.cancelled() => {
                // The statement was sent: cancel it (or withdraw its hold) until it ends, and
                // read its answer to the end, so the session stays in step. Each cancel is
                // waited for, and the session is this call's until then, so no later
                // statement can be hit.
                let deadline = tokio::time::Instant::now() + CANCEL_DEADLINE;
                let mut wait = CANCEL_AGAIN;
                loop {
                    sessions.cancel(key).await;
                    tokio::select! {
                        answer = &mut run => break answer,
                        () = tokio::time::sleep(wait) => {}
                    }
                    if tokio::time::Instant::now() >= deadline {
                        tracing::warn!("a cancelled MCP call's statement did not end; closing its session");
                        break Err(ClientError::Closed);
                    }
                    wait = (wait * 2).min(CANCEL_EVERY_MAX);
                }
            }
        }
    };
    // A statement that could not be sent left the session as it was; any other failure
    // leaves it out of step or ended.
    if answer
        .as_ref()
        .is_err_and(|e| !matches!(e, ClientError::Unsendable(_)))
    {
        lease.discard();
    }
    answer
}
