//! Warm upstream connections. A session that ends cleanly, with its upstream at rest and
//! outside a transaction, hands its connection back; it is reset with `DISCARD ALL` and kept
//! for `warm_idle_timeout`, for the next session that logs in with exactly the same startup
//! parameters: the same role, the same subject in `application_name`, the same settings and
//! read-only flag. `DISCARD ALL` returns every setting to the session default the login set,
//! so only an identical login may be handed what it leaves; anything else logs in afresh.
//!
//! Agents often connect once per step (`psql -c`); a warm connection spares Postgres a fork and
//! a login for each, and the gateway a SCRAM exchange.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::session::{Login, UpstreamSession, UpstreamStream};
use crate::metrics::{DatabaseLabels, Metrics};
use crate::wire::frame::FrameReader;

/// How long a reset may take before the connection is given up.
const RESET_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest message a reset's answer may hold: it is a handful of short ones.
const MAX_RESET_MESSAGE: usize = 64 * 1024;

/// Reset connections waiting for a session with the same login.
pub struct WarmPool {
    /// At most this many connections wait, over all logins (zero: none is kept).
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

#[derive(Default)]
struct Parked {
    by_login: HashMap<Login, Vec<(u64, UpstreamSession)>>,
    count: usize,
    next_id: u64,
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

    /// A warm connection that logged in with `login`, if one waits and is still open.
    pub fn take(&self, login: &[(String, String)]) -> Option<UpstreamSession> {
        loop {
            let mut session = {
                let mut parked = self.parked.lock().expect("warm pool lock");
                let waiting = parked.by_login.get_mut(login)?;
                let (_, session) = waiting.pop()?;
                if waiting.is_empty() {
                    parked.by_login.remove(login);
                }
                parked.count -= 1;
                self.count(|c| {
                    c.waiting.dec();
                });
                session
            };
            // A parked connection has nothing to say: any byte (a FATAL before Postgres closed
            // it, an idle-session timeout) or the end of the stream means it is no use.
            if still_open(&mut session.stream) {
                self.count(|c| {
                    c.taken.inc();
                });
                return Some(session);
            }
            tracing::debug!(
                pid = session.backend_pid,
                "a warm upstream connection had closed"
            );
        }
    }

    /// Resets a connection whose session ended at rest and parks it for the next identical
    /// login; one that fails the reset, or finds the pool full, is closed.
    pub async fn give_back(self: Arc<Self>, session: UpstreamSession) {
        if self.capacity == 0 {
            return close(session.stream).await;
        }
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
        // Parked under its login unless the pool is full; the lock is not held across a wait.
        let parked = {
            let mut parked = self.parked.lock().expect("warm pool lock");
            if parked.count >= self.capacity {
                Err(session)
            } else {
                let id = parked.next_id;
                parked.next_id += 1;
                parked.count += 1;
                self.count(|c| {
                    c.waiting.inc();
                });
                parked
                    .by_login
                    .entry(session.startup.clone())
                    .or_default()
                    .push((id, session));
                Ok(id)
            }
        };
        match parked {
            Ok(id) => {
                tokio::spawn(expire(Arc::downgrade(&self), id, self.idle_timeout));
            }
            Err(full) => close(full.stream).await,
        }
    }

    fn count(&self, update: impl FnOnce(&Counted)) {
        if let Some(counted) = &self.counted {
            update(counted);
        }
    }
}

/// Closes connection `id` once it has waited `after`, unless a session took it first.
async fn expire(pool: Weak<WarmPool>, id: u64, after: Duration) {
    tokio::time::sleep(after).await;
    let Some(pool) = pool.upgrade() else { return };
    let expired = {
        let mut parked = pool.parked.lock().expect("warm pool lock");
        let mut found = None;
        parked.by_login.retain(|_, waiting| {
            if let Some(at) = waiting.iter().position(|(parked_id, _)| *parked_id == id) {
                found = Some(waiting.remove(at).1);
            }
            !waiting.is_empty()
        });
        if found.is_some() {
            parked.count -= 1;
            pool.count(|c| {
                c.waiting.dec();
            });
        }
        found
    };
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
        startup,
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
                    startup,
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
