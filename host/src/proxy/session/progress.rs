//! Where a session's requests stand: how many request cycles went upstream, how many were
//! answered, whether a COPY FROM STDIN is open. Written by one direction each, read by the
//! other and by the runaway watch; waiting on it is how one direction waits for the other.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

/// Where the session's requests stand, shared by both directions and the runaway watch.
#[derive(Default)]
pub struct Progress {
    /// Request cycles (Query, Sync, FunctionCall) forwarded upstream; written by the client
    /// direction only.
    pub sent: AtomicU64,
    /// ReadyForQuery messages relayed to the client: the upstream's position in the client's
    /// request stream; written by the upstream direction only.
    pub done: AtomicU64,
    /// The transaction status the last ReadyForQuery reported (`I`, `T`, `E`; zero before
    /// the first), written before `done` counts it.
    pub status: AtomicU8,
    /// Postgres has started a COPY FROM STDIN (its CopyInResponse was relayed) that the client
    /// has not ended yet.
    pub copy_in: AtomicBool,
    /// Deallocations of named statements wait for their request cycles' answers (set by the
    /// client direction); while so, the upstream direction records the cycles that failed.
    pub forgets_pending: AtomicBool,
    /// Request cycles answered with an error, while `forgets_pending`.
    pub failed_cycles: std::sync::Mutex<Vec<u64>>,
    /// The request cycle being answered has brought an ErrorResponse (Postgres skips to Sync).
    pub cycle_failing: AtomicBool,
    /// Notified at each ReadyForQuery relayed, CopyInResponse and ErrorResponse.
    pub answered: tokio::sync::Notify,
}

impl Progress {
    /// Returns once Postgres has shown how the COPY FROM STDIN that request cycle `cycle`
    /// runs began: it entered copy mode, failed, or the cycle was answered.
    pub async fn copy_started_or_failed(&self, cycle: u64) {
        loop {
            let notified = self.answered.notified();
            if self.copy_in.load(Ordering::Acquire)
                || self.cycle_failing.load(Ordering::Acquire)
                || self.done.load(Ordering::Acquire) > cycle
            {
                return;
            }
            notified.await;
        }
    }

    /// Returns once request cycle `cycle` has been answered (its ReadyForQuery relayed).
    pub async fn answered_beyond(&self, cycle: u64) {
        loop {
            // Registered before the check: a notification in between is not lost.
            let notified = self.answered.notified();
            if self.done.load(Ordering::Acquire) > cycle {
                return;
            }
            notified.await;
        }
    }
}
