//! Session threads. Each runs a single-threaded tokio runtime that owns its sessions' sockets
//! from accept to close, so one statement's round trip — client read, upstream write, upstream
//! read, client write — never hops between threads. (A work-stealing runtime wakes a second
//! thread for every ready socket; on a loaded two-core box that costs tens of microseconds per
//! round trip, more than the relay itself.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

struct Worker {
    handle: Handle,
    sessions: Arc<AtomicUsize>,
}

pub struct Workers {
    workers: Vec<Worker>,
    stop: CancellationToken,
}

/// Counts a session against its worker until dropped.
pub struct Assignment {
    sessions: Arc<AtomicUsize>,
}

impl Drop for Assignment {
    fn drop(&mut self) {
        self.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts `count` worker threads (at least one).
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let stop = CancellationToken::new();
        let mut workers = Vec::new();
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("sluice-worker-{i}"))
                .spawn(move || runtime.block_on(stop.cancelled()))?;
            workers.push(Worker {
                handle,
                sessions: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(Workers { workers, stop })
    }

    /// The worker with the fewest sessions, and the session's place on it.
    pub fn pick(&self) -> (&Handle, Assignment) {
        let worker = self
            .workers
            .iter()
            .min_by_key(|w| w.sessions.load(Ordering::Relaxed))
            .unwrap_or(&self.workers[0]);
        worker.sessions.fetch_add(1, Ordering::Relaxed);
        (
            &worker.handle,
            Assignment {
                sessions: worker.sessions.clone(),
            },
        )
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Each worker's runtime is dropped on its own thread, which cancels its sessions.
        self.stop.cancel();
    }
}
