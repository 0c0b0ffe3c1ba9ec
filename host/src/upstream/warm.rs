//! Warm upstream connections. A session that ends cleanly, with its upstream at rest and
//! outside a transaction, hands its connection back; it is reset with `DISCARD ALL` and kept
//! for `warm_idle_timeout`, for the next session of the same token that logs in with exactly
//! the same startup parameters (role, `application_name` with the subject, settings, read-only
//! flag). `DISCARD ALL` returns every setting to the session default the login set, so only an
//! identical login may be handed what it leaves; and what it does not reset (an extension's
//! state, a loaded library) only ever reaches a later session of the same grant, which could
//! have done the same within one session. A warm connection is thus never shared between
//! tokens, and closes when its token expires or is revoked, as a session would. A connection
//! taken on another session thread than the one it was opened on moves its socket to the
//! taker's runtime, so that a round trip never hops between threads (`proxy/workers.rs`).
//!
//! Agents often connect once per step (`psql -c`); a warm connection spares Postgres a fork and
//! a login for each, and the gateway a SCRAM exchange.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::either::Either;

use super::session::{UpstreamSession, UpstreamStream, WarmKey};
use crate::identity::Grant;
use crate::metrics::{DatabaseLabels, Metrics};
use crate::wire::frame::FrameReader;

/// How long a reset may take before the connection is given up; also how long closing the
/// warm connections to free slots for a login may take.
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
    /// Whether the task closing connections past `idle_timeout` has been started.
    sweeping: AtomicBool,
    counted: Option<Counted>,
}

/// This database's series of `sluice_upstream_warm` and `sluice_upstream_warm_taken`.
struct Counted {
    waiting: Gauge,
    taken: Counter,
}

/// The parked connections by key, each with when it was parked (the oldest first).
#[derive(Default)]
struct Parked {
    by_key: HashMap<WarmKey, Vec<(Instant, UpstreamSession)>>,
}

impl Parked {
    fn len(&self) -> usize {
        self.by_key.values().map(Vec::len).sum()
    }

    fn park(&mut self, key: WarmKey, session: UpstreamSession) {
        self.by_key
            .entry(key)
            .or_default()
            .push((Instant::now(), session));
    }

    /// The connection parked last under `key`.
    fn take(&mut self, key: &WarmKey) -> Option<UpstreamSession> {
        let waiting = self.by_key.get_mut(key)?;
        let (_, session) = waiting.pop()?;
        if waiting.is_empty() {
            self.by_key.remove(key);
        }
        Some(session)
    }

    /// The connection parked longest.
    fn oldest(&mut self) -> Option<UpstreamSession> {
        let key = self
            .by_key
            .iter()
            .filter_map(|(key, waiting)| Some((waiting.first()?.0, key)))
            .min_by_key(|(parked_at, _)| *parked_at)
            .map(|(_, key)| key.clone())?;
        let waiting = self.by_key.get_mut(&key)?;
        let (_, session) = waiting.remove(0);
        if waiting.is_empty() {
            self.by_key.remove(&key);
        }
        Some(session)
    }

    /// Every connection `gone` says of (when it was parked, its token's grant) must go.
    fn remove_where(&mut self, gone: &Gone<'_>) -> Vec<UpstreamSession> {
        let mut removed = Vec::new();
        self.by_key.retain(|_, waiting| {
            let (out, kept): (Vec<_>, Vec<_>) =
                std::mem::take(waiting)
                    .into_iter()
                    .partition(|(parked_at, session)| {
                        session
                            .warm
                            .as_ref()
                            .is_none_or(|warm| gone(*parked_at, &warm.grant))
                    });
            removed.extend(out.into_iter().map(|(_, session)| session));
            *waiting = kept;
            !waiting.is_empty()
        });
        removed
    }
}

/// Which parked connections to close: by when each was parked and its token's grant.
pub type Gone<'a> = dyn Fn(Instant, &Grant) -> bool + Sync + 'a;

impl WarmPool {
    pub fn new(capacity: usize, idle_timeout: Duration) -> WarmPool {
        WarmPool {
            capacity,
            idle_timeout,
            parked: Mutex::new(Parked::default()),
            sweeping: AtomicBool::new(false),
            counted: None,
        }
    }

    /// Counts the connections kept and taken under `database` in `metrics`.
    pub fn count_in(&mut self, metrics: &Metrics, database: &str) {
        let labels = DatabaseLabels {
            database: database.to_owned(),
        };
        self.counted = Some(Counted {
            waiting: metrics.upstream_warm.get_or_create(&labels).clone(),
            taken: metrics.upstream_warm_taken.get_or_create(&labels).clone(),
        });
    }

    /// A warm connection parked under `key`, if one waits and is still open.
    pub fn take(&self, key: &WarmKey) -> Option<UpstreamSession> {
        loop {
            let session = {
                let mut parked = self.lock();
                let session = parked.take(key);
                self.count_waiting(&parked);
                session?
            };
            // A parked connection has nothing to say: any byte (a FATAL before Postgres closed
            // it, an idle-session timeout) or the end of the stream means it is no use.
            let mut session = session;
            if !silent_and_open(tcp(&mut session.stream)) {
                tracing::debug!(
                    pid = session.backend_pid,
                    "a warm upstream connection had closed"
                );
                continue;
            }
            let UpstreamSession { stream, .. } = session;
            match rehomed(stream) {
                Ok(stream) => {
                    if let Some(counted) = &self.counted {
                        counted.taken.inc();
                    }
                    return Some(UpstreamSession { stream, ..session });
                }
                Err(e) => tracing::warn!(error = %e, "a warm upstream connection could not move"),
            }
        }
    }

    /// Resets a connection whose session ended at rest and parks it for the next session of
    /// its key; one without a key or that fails the reset is closed.
    pub async fn give_back(self: Arc<Self>, session: UpstreamSession) {
        let Some(key) = session
            .warm
            .as_ref()
            .map(|warm| warm.key.clone())
            .filter(|_| self.capacity > 0)
        else {
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
        let evicted = {
            let mut parked = self.lock();
            let evicted = if parked.len() >= self.capacity {
                parked.oldest()
            } else {
                None
            };
            parked.park(key, session);
            self.count_waiting(&parked);
            evicted
        };
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweep(Arc::downgrade(&self), self.idle_timeout));
        }
        if let Some(evicted) = evicted {
            close(evicted.stream).await;
        }
    }

    /// Closes every parked connection and waits until Postgres has let go of them (within
    /// `RESET_TIMEOUT` in all); returns how many there were.
    pub async fn close_all(&self) -> usize {
        let all = {
            let mut parked = self.lock();
            let all = parked.remove_where(&|_, _| true);
            self.count_waiting(&parked);
            all
        };
        let closed = all.len();
        let mut closing = tokio::task::JoinSet::new();
        for session in all {
            closing.spawn(close_and_wait(session.stream));
        }
        let _ = tokio::time::timeout(RESET_TIMEOUT, closing.join_all()).await;
        closed
    }

    /// Closes the parked connections `gone` names.
    pub async fn close_where(&self, gone: &Gone<'_>) {
        let removed = {
            let mut parked = self.lock();
            let removed = parked.remove_where(gone);
            self.count_waiting(&parked);
            removed
        };
        for session in removed {
            close(session.stream).await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Parked> {
        self.parked.lock().expect("warm pool lock")
    }

    /// Sets the gauge under the lock, so that it never shows a stale count.
    fn count_waiting(&self, parked: &Parked) {
        if let Some(counted) = &self.counted {
            counted.waiting.set(parked.len() as i64);
        }
    }
}

/// Closes connections once they have waited `idle_timeout` or their token has expired,
/// looking a few times per timeout, for as long as the pool exists: one task per pool, however
/// many connections come and go.
async fn sweep(pool: Weak<WarmPool>, idle_timeout: Duration) {
    let every = (idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        let now = SystemTime::now();
        pool.close_where(&|parked_at, grant| {
            parked_at.elapsed() >= idle_timeout || grant.expires_at <= now
        })
        .await;
    }
}

/// `DISCARD ALL`, and its answer checked: the command's completion and an idle
/// ReadyForQuery, with only the settings the login reported, back at the login's values.
async fn reset(session: UpstreamSession) -> Result<UpstreamSession, (UpstreamStream, String)> {
    let UpstreamSession {
        mut stream,
        buffered,
        ..
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
            b'S' if session.login_messages.iter().any(|m| m == frame.raw()) => {}
            b'S' => break "a setting did not return to the login's value".to_owned(),
            b'Z' if discarded && frame.body() == b"I" => {
                let (stream, buffered) = reader.into_parts();
                if !buffered.is_empty() {
                    return Err((stream, "the upstream sent more than it was asked".into()));
                }
                return Ok(UpstreamSession {
                    stream,
                    buffered,
                    ..session
                });
            }
            tag => break format!("unexpected message {:?} during the reset", tag as char),
        }
    };
    Err((reader.into_parts().0, why))
}

/// The TCP connection under a stream, TLS or not.
fn tcp(stream: &mut UpstreamStream) -> &mut TcpStream {
    match stream {
        Either::Left(tls) => tls.get_mut().0,
        Either::Right(tcp) => tcp,
    }
}

/// Whether a parked connection is still open and has nothing to say, asked of the kernel (a
/// peek that does not wait): the runtime's own record of the socket's readiness may be older.
fn silent_and_open(tcp: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    matches!(
        socket2::SockRef::from(tcp).peek(&mut byte),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
    )
}

/// The same connection with its socket registered with the runtime of the calling thread
/// (a duplicate of the descriptor, the old one deregistered and closed), whichever session
/// thread it was opened on.
fn rehomed(mut stream: UpstreamStream) -> std::io::Result<UpstreamStream> {
    let tcp = tcp(&mut stream);
    let duplicate: std::net::TcpStream = socket2::SockRef::from(&*tcp).try_clone()?.into();
    drop(std::mem::replace(tcp, TcpStream::from_std(duplicate)?));
    Ok(stream)
}

async fn close(mut stream: UpstreamStream) {
    let _ = stream.write_all(&crate::wire::backend::terminate()).await;
    let _ = stream.shutdown().await;
}

/// Closes a connection and waits until Postgres has closed its end: by then its backend has
/// given up its connection slot.
async fn close_and_wait(mut stream: UpstreamStream) {
    let _ = stream.write_all(&crate::wire::backend::terminate()).await;
    let _ = stream.flush().await;
    let mut sink = [0u8; 256];
    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
}
