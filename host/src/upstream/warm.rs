//! Warm upstream connections. A session that ends cleanly, with its upstream at rest and
//! outside a transaction, hands its connection back; it is reset with `DISCARD ALL` and kept
//! for `warm_idle_timeout`, for the next session of the same token that logs in with exactly
//! the same startup parameters (role, `application_name` with the subject, settings, read-only
//! flag). `DISCARD ALL` returns every setting to the session default the login set, so only an
//! identical login may be handed what it leaves; and what it does not reset (an extension's
//! state, a loaded library) only ever reaches a later session of the same grant, which could
//! have done the same within one session. A warm connection is thus never shared between
//! tokens, and lives no longer than its token could keep one session open (plus the idle
//! timeout).
//!
//! Agents often connect once per step (`psql -c`); a warm connection spares Postgres a fork and
//! a login for each, and the gateway a SCRAM exchange.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::session::{UpstreamSession, UpstreamStream, WarmKey};
use crate::metrics::{DatabaseLabels, Metrics};
use crate::wire::frame::FrameReader;

/// How long a reset may take before the connection is given up.
const RESET_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest message a reset's answer may hold: it is a handful of short ones.
const MAX_RESET_MESSAGE: usize = 64 * 1024;

/// Reset connections waiting for a session of the same token and login.
pub struct WarmPool {
    /// At most this many connections wait, over all keys (zero: none is kept); when full, the
    /// one parked longest makes room.
    capacity: usize,
    idle_timeout: Duration,
    parked: Mutex<Parked>,
    counted: Option<Counted>,
}

/// This database's series of `sluice_upstream_warm` and `sluice_upstream_warm_taken`.
struct Counted {
    waiting: Gauge,
    taken: Counter,
}

/// The parked connections by key, each with its parking number (the older, the lower).
#[derive(Default)]
struct Parked {
    by_key: HashMap<WarmKey, Vec<(u64, UpstreamSession)>>,
    count: usize,
    next_id: u64,
}

impl Parked {
    fn park(&mut self, key: WarmKey, session: UpstreamSession) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.count += 1;
        self.by_key.entry(key).or_default().push((id, session));
        id
    }

    /// The connection parked last under `key`.
    fn take(&mut self, key: &WarmKey) -> Option<UpstreamSession> {
        let waiting = self.by_key.get_mut(key)?;
        let (_, session) = waiting.pop()?;
        if waiting.is_empty() {
            self.by_key.remove(key);
        }
        self.count -= 1;
        Some(session)
    }

    /// Connection `id`, or with none the one parked longest.
    fn remove(&mut self, id: Option<u64>) -> Option<UpstreamSession> {
        let (key, at) = self
            .by_key
            .iter()
            .flat_map(|(key, waiting)| {
                waiting
                    .iter()
                    .enumerate()
                    .map(move |(at, (parked_id, _))| (*parked_id, key, at))
            })
            .filter(|(parked_id, _, _)| id.is_none_or(|id| id == *parked_id))
            .min_by_key(|(parked_id, _, _)| *parked_id)
            .map(|(_, key, at)| (key.clone(), at))?;
        let waiting = self.by_key.get_mut(&key)?;
        let (_, session) = waiting.remove(at);
        if waiting.is_empty() {
            self.by_key.remove(&key);
        }
        self.count -= 1;
        Some(session)
    }
}

impl WarmPool {
    pub fn new(capacity: usize, idle_timeout: Duration) -> WarmPool {
        WarmPool {
            capacity,
            idle_timeout,
            parked: Mutex::new(Parked::default()),
            counted: None,
        }
    }

    /// Counts the connections kept and taken under `database` in `metrics`.
    pub fn counted_in(mut self, metrics: &Metrics, database: &str) -> WarmPool {
        let labels = DatabaseLabels {
            database: database.to_owned(),
        };
        self.counted = Some(Counted {
            waiting: metrics.upstream_warm.get_or_create(&labels).clone(),
            taken: metrics.upstream_warm_taken.get_or_create(&labels).clone(),
        });
        self
    }

    /// A warm connection parked under `key`, if one waits and is still open.
    pub fn take(&self, key: &WarmKey) -> Option<UpstreamSession> {
        loop {
            let mut session = self.parked().take(key)?;
            self.count_waiting();
            // A parked connection has nothing to say: any byte (a FATAL before Postgres closed
            // it, an idle-session timeout) or the end of the stream means it is no use.
            if still_open(&mut session.stream) {
                if let Some(counted) = &self.counted {
                    counted.taken.inc();
                }
                return Some(session);
            }
            tracing::debug!(
                pid = session.backend_pid,
                "a warm upstream connection had closed"
            );
        }
    }

    /// Resets a connection whose session ended at rest and parks it for the next session of
    /// its key; one without a key or that fails the reset is closed.
    pub async fn give_back(self: Arc<Self>, session: UpstreamSession) {
        let Some(key) = session.warm_key.clone().filter(|_| self.capacity > 0) else {
            return close(session.stream).await;
        };
        let session = match tokio::time::timeout(RESET_TIMEOUT, reset(session)).await {
            Ok(Ok(session)) => session,
            Ok(Err((stream, why))) => {
                tracing::info!(%why, "an upstream connection was not kept warm");
                return close(stream).await;
            }
            Err(_) => {
                tracing::info!("an upstream connection's reset timed out; not kept warm");
                return;
            }
        };
        let (id, evicted) = {
            let mut parked = self.parked();
            let evicted = if parked.count >= self.capacity {
                parked.remove(None)
            } else {
                None
            };
            (parked.park(key, session), evicted)
        };
        self.count_waiting();
        tokio::spawn(expire(Arc::downgrade(&self), id, self.idle_timeout));
        if let Some(evicted) = evicted {
            close(evicted.stream).await;
        }
    }

    /// Closes every parked connection and waits until Postgres has let go of them; returns
    /// how many there were.
    pub async fn close_all(&self) -> usize {
        let all: Vec<UpstreamSession> = {
            let mut parked = self.parked();
            std::iter::from_fn(|| parked.remove(None)).collect()
        };
        self.count_waiting();
        let closed = all.len();
        for session in all {
            close_and_wait(session.stream).await;
        }
        closed
    }

    fn parked(&self) -> std::sync::MutexGuard<'_, Parked> {
        self.parked.lock().expect("warm pool lock")
    }

    fn count_waiting(&self) {
        if let Some(counted) = &self.counted {
            counted.waiting.set(self.parked().count as i64);
        }
    }
}

/// Closes connection `id` once it has waited `after`, unless a session took it first.
async fn expire(pool: Weak<WarmPool>, id: u64, after: Duration) {
    tokio::time::sleep(after).await;
    let Some(pool) = pool.upgrade() else { return };
    let expired = pool.parked().remove(Some(id));
    pool.count_waiting();
    if let Some(session) = expired {
        close(session.stream).await;
    }
}

/// `DISCARD ALL`, and its answer checked: the command's completion and an idle
/// ReadyForQuery, with only the settings the login reported, back at the login's values.
async fn reset(session: UpstreamSession) -> Result<UpstreamSession, (UpstreamStream, String)> {
    let UpstreamSession {
        mut stream,
        buffered,
        backend_pid,
        backend_secret,
        login_messages,
        ready_for_query,
        warm_key,
    } = session;
    if !buffered.is_empty() {
        return Err((stream, "bytes were left unread".into()));
    }
    let mut query = BytesMut::new();
    frontend::query("DISCARD ALL", &mut query).expect("a query without NUL");
    let sent = async {
        stream.write_all(&query).await?;
        stream.flush().await
    };
    if let Err(e) = sent.await {
        return Err((stream, e.to_string()));
    }
    let mut reader = FrameReader::new(stream, MAX_RESET_MESSAGE);
    let mut discarded = false;
    let why = loop {
        let frame = match reader.next().await {
            Ok(Some(frame)) => frame,
            Ok(None) => break "the upstream closed the connection".to_owned(),
            Err(e) => break e.to_string(),
        };
        match frame.tag() {
            b'C' if frame.body() == b"DISCARD ALL\0" => discarded = true,
            b'N' => {}
            b'S' if login_messages.iter().any(|m| m == frame.raw()) => {}
            b'S' => break "a setting did not return to the login's value".to_owned(),
            b'Z' if discarded && frame.body() == b"I" => {
                let (stream, buffered) = reader.into_parts();
                if !buffered.is_empty() {
                    return Err((stream, "the upstream sent more than it was asked".into()));
                }
                return Ok(UpstreamSession {
                    stream,
                    buffered,
                    backend_pid,
                    backend_secret,
                    login_messages,
                    ready_for_query,
                    warm_key,
                });
            }
            tag => break format!("unexpected message {:?} during the reset", tag as char),
        }
    };
    Err((reader.into_parts().0, why))
}

/// Whether a parked connection is still open and silent: a read that is not ready at once.
fn still_open(stream: &mut UpstreamStream) -> bool {
    let mut byte = [0u8; 1];
    let read = stream.read(&mut byte);
    let waker = std::task::Waker::noop();
    let mut context = std::task::Context::from_waker(waker);
    std::pin::pin!(read)
        .as_mut()
        .poll(&mut context)
        .is_pending()
}

async fn close(mut stream: UpstreamStream) {
    let _ = stream.write_all(&crate::wire::backend::terminate()).await;
    let _ = stream.shutdown().await;
}

/// Closes a connection and waits (a while) until Postgres has closed its end: by then its
/// backend has given up its connection slot.
async fn close_and_wait(stream: UpstreamStream) {
    let mut stream = stream;
    let _ = stream.write_all(&crate::wire::backend::terminate()).await;
    let _ = stream.flush().await;
    let mut sink = [0u8; 256];
    let _ = tokio::time::timeout(RESET_TIMEOUT, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}
