//! Upstream sessions of the MCP server: one per token, database and MCP session, so a
//! transaction opened by one tool call is there for the next. Where the protocol has sessions
//! (before 2026-07-28) the MCP session's end ends it; without (2026-07-28 is stateless), calls
//! with the same token share one. Either way it ends when it idles out, and the gateway itself
//! ends it when the token expires or is revoked, as it ends any session's.
//!
//! Everything is keyed by a digest of the whole bearer token, never by a claim: a token id is
//! no secret (the audit log shows it), and another issuer's token could carry the same one. An
//! MCP session belongs to the token that opened it; another token presenting its id is told
//! it does not exist.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use tokio_util::sync::CancellationToken;

use super::client::{self, ClientError, Session};
use crate::proxy::LocalDoor;

/// MCP sessions one token may hold open at once.
const SESSIONS_PER_TOKEN: usize = 16;

/// Which upstream session a call runs in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The token's digest ([`Caller::token_digest`]): another token, even of the same
    /// subject, gets its own session.
    pub token: String,
    /// A token that may use several databases gets a session in each.
    pub database: String,
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
    /// Why the session was closed with a transaction open, for the next call to hear: it must
    /// not run in a fresh session as if the transaction were still there.
    lost: Mutex<Option<String>>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            session: tokio::sync::Mutex::new(None),
            last_used: Mutex::new(Instant::now()),
            lost: Mutex::new(None),
        }
    }

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
        if let Some(why) = self.lost.lock().expect("not poisoned").take() {
            return Err(ClientError::TransactionLost(why));
        }
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

    /// Closes the session of a slot idle past `timeout` with no call in it. `true`: the slot
    /// can go; `false`: it stays, to tell the next call that its transaction was lost (or it
    /// is busy, or not idle yet).
    fn close_if_idle(&self, timeout: Duration) -> bool {
        if self.idle_for() < timeout {
            return false;
        }
        let Ok(mut held) = self.session.try_lock() else {
            return false;
        };
        match held.take() {
            Some(session) if session.in_transaction() => {
                *self.lost.lock().expect("not poisoned") = Some(format!(
                    "the database session was closed after {} unused with a transaction open; \
                     the transaction was rolled back",
                    humantime::format_duration(timeout)
                ));
                self.touch();
                false
            }
            _ => true,
        }
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
    /// A transaction open in it is lost: the next call hears so before anything runs.
    pub fn discard(mut self) {
        if self.held.take().is_some_and(|s| s.in_transaction()) {
            *self.slot.lost.lock().expect("not poisoned") = Some(
                "the database session ended with a transaction open; the transaction was rolled back"
                    .into(),
            );
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.slot.touch();
    }
}

/// An MCP session's token (digest), and when a request last named it.
struct Owner {
    token: String,
    seen: Instant,
}

pub struct Sessions {
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
    owners: Mutex<HashMap<String, Owner>>,
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
            .or_insert_with(|| Arc::new(Slot::new()))
            .clone();
        slot.touch();
        slot
    }

    /// Whether the token of `digest` may open another MCP session.
    pub fn may_open(&self, digest: &str) -> bool {
        let owners = self.owners.lock().expect("not poisoned");
        owners.values().filter(|o| o.token == digest).count() < SESSIONS_PER_TOKEN
    }

    /// `mcp_session` was opened with the token of `digest`.
    pub fn own(&self, mcp_session: &str, digest: &str) {
        self.owners.lock().expect("not poisoned").insert(
            mcp_session.to_owned(),
            Owner {
                token: digest.to_owned(),
                seen: Instant::now(),
            },
        );
    }

    /// Whether `mcp_session` is one the token of `digest` opened (and still in use).
    pub fn owned_by(&self, mcp_session: &str, digest: &str) -> bool {
        match self
            .owners
            .lock()
            .expect("not poisoned")
            .get_mut(mcp_session)
        {
            Some(owner) if owner.token == digest => {
                owner.seen = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// Ends the upstream sessions of an MCP session that ended.
    pub fn end_mcp_session(&self, mcp_session: &str) {
        self.owners
            .lock()
            .expect("not poisoned")
            .remove(mcp_session);
        self.slots
            .lock()
            .expect("not poisoned")
            .retain(|key, _| key.mcp_session.as_deref() != Some(mcp_session));
    }

    /// Closes sessions idle past the timeout (one with a call in it is never idle: its call
    /// holds the slot, and `last_used` is set again when it returns). Returns the MCP sessions
    /// that idled out, for the MCP server to close.
    fn end_idle(&self) -> Vec<String> {
        let mut slots = self.slots.lock().expect("not poisoned");
        slots.retain(|_, slot| !slot.close_if_idle(self.idle_timeout));
        let mut owners = self.owners.lock().expect("not poisoned");
        let idle: Vec<String> = owners
            .iter()
            .filter(|(id, owner)| {
                owner.seen.elapsed() >= self.idle_timeout
                    && !slots
                        .iter()
                        .any(|(key, _)| key.mcp_session.as_deref() == Some(id.as_str()))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &idle {
            owners.remove(id);
        }
        idle
    }

    /// Ends idle sessions until `stop`, closing idle MCP sessions in `manager` too.
    pub async fn reap(self: Arc<Self>, manager: Arc<LocalSessionManager>, stop: CancellationToken) {
        let every = (self.idle_timeout / 4).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            for id in self.end_idle() {
                if let Err(e) = manager.close_session(&id.into()).await {
                    tracing::debug!(error = %e, "closing an idle MCP session");
                }
            }
        }
    }

    /// Cancels what runs in the session with cancel key `key`, or withdraws its held
    /// statement.
    pub async fn cancel(&self, key: (i32, i32)) {
        if let Err(e) = client::cancel(self.door.clone(), key).await {
            tracing::warn!(error = %e, "cancelling an MCP tool call's statement failed");
        }
    }
}
