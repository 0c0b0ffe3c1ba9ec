//! Cancel keys. Each client gets the gateway's own BackendKeyData; a CancelRequest carrying it is
//! mapped to the upstream backend's key, and anything else is dropped without a word, as
//! Postgres does. A cancel also wakes the session itself, which may be holding a statement
//! for approval that the upstream has not seen.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use crate::upstream::Upstream;

struct Target {
    secret: i32,
    session: Arc<Notify>,
    forwarded: Arc<AtomicBool>,
    upstream: Arc<Upstream>,
    upstream_pid: i32,
    upstream_secret: i32,
}

/// The live sessions' cancel keys, by the process id the gateway handed out.
#[derive(Default)]
pub struct CancelRegistry {
    targets: DashMap<i32, Target>,
}

/// Removes a session's key when the session ends.
pub struct CancelKey {
    registry: Arc<CancelRegistry>,
    pub pid: i32,
    pub secret: i32,
    /// Notified (to current waiters only) when a valid cancel request arrives.
    pub cancelled: Arc<Notify>,
    /// Set before a cancel is forwarded to the upstream backend, by the registry or by the
    /// session's own runaway watch.
    forwarded: Arc<AtomicBool>,
}

impl CancelKey {
    /// Marks the upstream backend as sent a cancel.
    pub fn forwarding(&self) {
        self.forwarded.store(true, Ordering::Release);
    }

    /// Removes the key and tells whether a cancel was ever forwarded for it: a cancel still on
    /// its way could interrupt whatever the backend runs next, so such a backend is not kept
    /// warm. Once the key is removed no cancel can find it.
    pub fn retire(self) -> bool {
        let forwarded = self.forwarded.clone();
        drop(self);
        forwarded.load(Ordering::Acquire)
    }
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        self.registry.targets.remove(&self.pid);
    }
}

impl CancelRegistry {
    /// Hands out a fresh random key for a session whose upstream backend is `pid`/`secret`.
    pub fn register(
        self: &Arc<Self>,
        upstream: Arc<Upstream>,
        upstream_pid: i32,
        upstream_secret: i32,
    ) -> CancelKey {
        loop {
            let pid = rand::random_range(1..i32::MAX);
            if let Entry::Vacant(slot) = self.targets.entry(pid) {
                let secret = rand::random();
                let cancelled = Arc::new(Notify::new());
                let forwarded = Arc::new(AtomicBool::new(false));
                slot.insert(Target {
                    secret,
                    session: cancelled.clone(),
                    forwarded: forwarded.clone(),
                    upstream: upstream.clone(),
                    upstream_pid,
                    upstream_secret,
                });
                return CancelKey {
                    registry: self.clone(),
                    pid,
                    secret,
                    cancelled,
                    forwarded,
                };
            }
        }
    }

    /// Forwards a cancel for a known key; unknown or forged keys are ignored.
    pub async fn cancel(&self, pid: i32, secret: i32) -> bool {
        let target = match self.targets.get(&pid) {
            Some(t) if bool::from(t.secret.to_be_bytes().ct_eq(&secret.to_be_bytes())) => {
                // Under the map's read guard: the session's `retire` waits for it.
                t.forwarded.store(true, Ordering::Release);
                t.session.notify_waiters();
                (t.upstream.clone(), t.upstream_pid, t.upstream_secret)
            }
            _ => {
                tracing::debug!(pid, "cancel request with an unknown key ignored");
                return false;
            }
        };
        let (upstream, upstream_pid, upstream_secret) = target;
        match upstream.cancel(upstream_pid, upstream_secret).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "forwarding a cancel request failed");
                false
            }
        }
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}
