//! Upstream sessions of the MCP server: one per token and MCP session, so a transaction opened
//! by one tool call is there for the next. Where the protocol has sessions (before
//! 2026-07-28) the MCP session's end ends it; without (2026-07-28 is stateless), calls with the
//! same token share one. Either way it ends when it idles out, and the gateway itself ends it
//! when the token expires or is revoked, as it ends any session's.
//!
//! Everything is keyed by a digest of the whole bearer token, never by a claim: a token id is
//! no secret (the audit log shows it), and another issuer's token could carry the same one. An
//! MCP session belongs to the token that opened it; another token presenting its id is told
//! it does not exist.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::client::{self, ClientError, Session};
use crate::proxy::LocalDoor;

/// Which upstream session a call runs in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The token's digest ([`Caller::token_digest`]): another token, even of the same
    /// subject, gets its own session.
    pub token: String,
    /// The MCP session (`Mcp-Session-Id`), where the protocol has one.
    pub mcp_session: Option<String>,
}

/// Who calls, as the authentication layer verified it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: String,
    /// SHA-256 of the token, hex.
    pub token_digest: String,
    pub subject: String,
    pub database: String,
    pub read_only: bool,
    /// The HTTP client's address, recorded as the session's client address.
    pub addr: String,
}

/// A slot for one upstream session: calls in it take turns.
pub struct Slot {
    session: tokio::sync::Mutex<Option<Session>>,
    last_used: Mutex<Instant>,
}

impl Slot {
    /// The slot's session, logged in first if there is none. Calls take turns: a second call
    /// waits for the first to return.
    pub async fn acquire(
        &self,
        door: &LocalDoor,
        caller: &Caller,
        max_message: usize,
    ) -> Result<Lease<'_>, ClientError> {
        let mut held = self.session.lock().await;
        self.touch();
        if held.is_none() {
            *held = Some(
                Session::open(
                    door,
                    caller.addr.clone(),
                    &caller.subject,
                    &caller.database,
                    &caller.token,
                    max_message,
                )
                .await?,
            );
        }
        Ok(Lease { held, slot: self })
    }

    fn touch(&self) {
        *self.last_used.lock().expect("not poisoned") = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_used.lock().expect("not poisoned").elapsed()
    }
}

/// A call's turn on a session.
pub struct Lease<'a> {
    held: tokio::sync::MutexGuard<'a, Option<Session>>,
    slot: &'a Slot,
}

impl Lease<'_> {
    pub fn session(&mut self) -> &mut Session {
        self.held.as_mut().expect("a lease holds a session")
    }

    /// The session ended (expiry, revocation, a shutdown) or cannot be trusted to be in step:
    /// the next call opens a new one, if the token still allows it.
    pub fn discard(mut self) {
        *self.held = None;
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.slot.touch();
    }
}

pub struct Sessions {
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
    /// Each MCP session's token (digest) and when it was last used.
    owners: Mutex<HashMap<String, (String, Instant)>>,
    pub door: LocalDoor,
    pub idle_timeout: Duration,
}

impl Sessions {
    pub fn new(door: LocalDoor, idle_timeout: Duration) -> Sessions {
        Sessions {
            slots: Mutex::new(HashMap::new()),
            owners: Mutex::new(HashMap::new()),
            door,
            idle_timeout,
        }
    }

    /// The slot for `key`, marked used (under the map's lock, so the idle reaper cannot
    /// remove it between here and the call taking it).
    pub fn slot(&self, key: Key) -> Arc<Slot> {
        let slot = self
            .slots
            .lock()
            .expect("not poisoned")
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Slot {
                    session: tokio::sync::Mutex::new(None),
                    last_used: Mutex::new(Instant::now()),
                })
            })
            .clone();
        slot.touch();
        slot
    }

    /// `mcp_session` was opened with the token of `digest`.
    pub fn own(&self, mcp_session: &str, digest: &str) {
        self.owners
            .lock()
            .expect("not poisoned")
            .insert(mcp_session.to_owned(), (digest.to_owned(), Instant::now()));
    }

    /// Whether `mcp_session` is one the token of `digest` opened (and still in use).
    pub fn owned_by(&self, mcp_session: &str, digest: &str) -> bool {
        match self
            .owners
            .lock()
            .expect("not poisoned")
            .get_mut(mcp_session)
        {
            Some((owner, seen)) if owner == digest => {
                *seen = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// Ends the upstream sessions of an MCP session that ended.
    pub fn end_mcp_session(&self, mcp_session: &str) {
        let owner = self
            .owners
            .lock()
            .expect("not poisoned")
            .remove(mcp_session)
            .map(|(digest, _)| digest);
        self.slots.lock().expect("not poisoned").retain(|key, _| {
            key.mcp_session.as_deref() != Some(mcp_session)
                || owner.as_ref().is_some_and(|o| *o != key.token)
        });
    }

    /// Ends sessions idle past the timeout (one busy with a call is never idle: its call
    /// holds the slot, and `last_used` is set again when it returns).
    fn end_idle(&self) {
        self.slots.lock().expect("not poisoned").retain(|_, slot| {
            slot.session.try_lock().is_err() || slot.idle_for() < self.idle_timeout
        });
        // The MCP server closes its own sessions idle this long.
        self.owners
            .lock()
            .expect("not poisoned")
            .retain(|_, (_, seen)| seen.elapsed() < self.idle_timeout);
    }

    /// Ends idle sessions until `stop`.
    pub async fn reap(self: Arc<Self>, stop: CancellationToken) {
        let every = (self.idle_timeout / 4).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => self.end_idle(),
            }
        }
    }

    /// Cancels what runs in the session with cancel key `key`, or withdraws its held
    /// statement.
    pub async fn cancel(&self, key: (i32, i32)) {
        if let Err(e) = client::cancel(&self.door, key).await {
            tracing::warn!(error = %e, "cancelling an MCP tool call's statement failed");
        }
    }
}
