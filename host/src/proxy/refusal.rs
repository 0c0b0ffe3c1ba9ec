//! How a refused message is answered. The gateway does not answer it itself: responses to
//! messages already forwarded may still be on their way, and a pipeline's answers must stay in
//! order. Instead the refused message is replaced by one that fails upstream at the same point,
//! and the gateway rewrites that failure into its own ErrorResponse on the way back. Postgres
//! itself then does the rest exactly as for any error: in the extended protocol it discards
//! messages until Sync (so an earlier unnamed statement can never run in the refused one's
//! place, and a refused named statement does not exist), and inside a transaction block the
//! transaction is failed, so a later COMMIT cannot commit earlier writes.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::frontend;

use crate::wire::backend as messages;

struct Pending {
    marker: String,
    /// How many ReadyForQuery messages the upstream sends before the failure comes back.
    cycle: u64,
    error: Bytes,
}

/// Refusals in flight, shared by the two directions of a session.
#[derive(Default)]
pub struct Refusals {
    pending: Mutex<VecDeque<Pending>>,
    count: AtomicUsize,
}

impl Refusals {
    /// A substitute for a refused `Query` or `FunctionCall` message. `cycle` is the number of
    /// ReadyForQuery-producing messages forwarded before it.
    pub fn query(&self, cycle: u64, code: &str, message: &str) -> Bytes {
        let sql = self.register(cycle, code, message);
        let mut buf = BytesMut::new();
        let _ = frontend::query(&sql, &mut buf);
        buf.freeze()
    }

    /// A substitute for a refused `Parse` of statement `name`.
    pub fn parse(&self, cycle: u64, name: &str, code: &str, message: &str) -> Bytes {
        let sql = self.register(cycle, code, message);
        let mut buf = BytesMut::new();
        let _ = frontend::parse(name, &sql, std::iter::empty(), &mut buf);
        buf.freeze()
    }

    fn register(&self, cycle: u64, code: &str, message: &str) -> String {
        let marker = format!("sluice refused {:032x}", rand::random::<u128>());
        // A column that cannot exist: Postgres fails it at parse analysis, before anything
        // runs, with an error that names the marker.
        let sql = format!("SELECT \"{marker}\"");
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.push_back(Pending {
            marker,
            cycle,
            error: messages::error(code, message),
        });
        self.count.store(pending.len(), Ordering::Release);
        sql
    }

    /// Whether any refusal is in flight (cheap; checked for every ErrorResponse and
    /// ReadyForQuery from upstream).
    pub fn any(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }

    /// If `error_body` is the failure of a substitute sent in `cycle`, the ErrorResponse the
    /// client must see instead.
    pub fn rewrite(&self, cycle: u64, error_body: &[u8]) -> Option<Bytes> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let index = pending.iter().position(|p| {
            p.cycle == cycle
                && error_body
                    .windows(p.marker.len())
                    .any(|w| w == p.marker.as_bytes())
        })?;
        let found = pending.remove(index)?;
        self.count.store(pending.len(), Ordering::Release);
        Some(found.error)
    }

    /// After the ReadyForQuery that ends `cycle`: substitutes of that cycle the upstream
    /// skipped (after an earlier error in the same batch) will never fail now.
    pub fn cycle_done(&self, cycle: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|p| p.cycle > cycle);
        self.count.store(pending.len(), Ordering::Release);
    }
}
