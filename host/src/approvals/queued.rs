//! Requests for access, which nobody waits on with a connection open: their requester asks
//! about them (and may wait a while in one call), and an approved one's token is handed out
//! once.

use super::*;

/// How often a requester waiting on a request for access re-reads the store, for votes cast
/// through another gateway sharing it.
pub const POLL_STORE: Duration = Duration::from_millis(250);

/// What the store keeps of a secret.
pub fn hash(secret: &str) -> String {
    crate::audit::record::hex(
        ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref(),
    )
}

impl Approvals {
    /// The request `id` once it is decided, or as it stands after `wait`. A request for access
    /// found past its expiry is closed as expired. Votes cast through this gateway wake the
    /// wait at once; those cast through another sharing the store are seen within
    /// [`POLL_STORE`].
    pub async fn wait_for_decision(
        &self,
        id: &str,
        wait: Duration,
    ) -> Result<Option<ApprovalRecord>, ApprovalError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut changed = self.changed.subscribe();
        loop {
            changed.borrow_and_update();
            let Some(record) = self.get(id).await? else {
                return Ok(None);
            };
            if record.status == Status::Pending && record.request.expires <= SystemTime::now() {
                self.expire_stale().await?;
                return self.get(id).await;
            }
            let now = tokio::time::Instant::now();
            if record.status != Status::Pending || now >= deadline {
                return Ok(Some(record));
            }
            let nap = (deadline - now).min(POLL_STORE);
            let _ = tokio::time::timeout(nap, changed.changed()).await;
        }
    }

    /// Marks an approved request for access as delivered, for the holder of its collection
    /// `secret`: `true` for the one caller that hands out its token.
    pub async fn deliver(&self, id: &str, secret: &str) -> Result<bool, ApprovalError> {
        let (id, hash) = (id.to_owned(), hash(secret));
        self.blocking(move |store| store.deliver(&id, &hash, SystemTime::now()))
            .await
    }
}
