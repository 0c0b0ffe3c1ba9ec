//! Upstream sessions of the MCP server: one per token and MCP session, so a transaction opened
//! by one tool call is there for the next. Where the protocol has sessions (before
//! 2026-07-28) the MCP session's end ends it; without (2026-07-28 is stateless), calls with the
//! same token share one. Either way it ends when it idles out, and the gateway itself ends it
//! when the token expires or is revoked, as it ends any session's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::client::{self, ClientError, Session};
use crate::proxy::LocalDoor;

/// Which upstream session a call runs in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The token's id (`jti`): another token, even of the same subject, gets its own session.
    pub token_id: String,
    /// The MCP session (`Mcp-Session-Id`), where the protocol has one.
    pub mcp_session: Option<String>,
}

/// Who calls, as the authentication layer verified it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: String,
    pub subject: String,
    pub database: String,
    pub token_id: String,
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
    pub door: LocalDoor,
    idle_timeout: Duration,
}

impl Sessions {
    pub fn new(door: LocalDoor, idle_timeout: Duration) -> Sessions {
        Sessions {
            slots: Mutex::new(HashMap::new()),
            door,
            idle_timeout,
        }
    }

    pub fn slot(&self, key: Key) -> Arc<Slot> {
        self.slots
            .lock()
            .expect("not poisoned")
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Slot {
                    session: tokio::sync::Mutex::new(None),
                    last_used: Mutex::new(Instant::now()),
                })
            })
            .clone()
    }

    /// Ends the upstream sessions of an MCP session that ended.
    pub fn end_mcp_session(&self, mcp_session: &str) {
        self.slots
            .lock()
            .expect("not poisoned")
            .retain(|key, _| key.mcp_session.as_deref() != Some(mcp_session));
    }

    /// Ends sessions idle past the timeout (one busy with a call is never idle: its call
    /// holds the slot, and `last_used` is set again when it returns).
    fn end_idle(&self) {
        self.slots.lock().expect("not poisoned").retain(|_, slot| {
            slot.session.try_lock().is_err() || slot.idle_for() < self.idle_timeout
        });
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
