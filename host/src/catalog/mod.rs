//! The catalog cache: every table, view and foreign table of one database with its columns
//! (by attribute number) and, for user views, the lineage of their definition; and the
//! user-defined functions.
//!
//! System catalogs and `information_schema` are in it too, as relations of their own: they
//! carry names and definitions, not rows of user tables, so their columns are planned like any
//! table's (agents and ORMs introspect the schema first, and `\d` must work). The planner's
//! statistics are the exception: `pg_stats` and its relatives hold real values of every column
//! (most common values, histogram bounds), so they and every view over them are marked
//! [`Relation::statistics`] and never reach a client of a masked session.
//!
//! It is read on a side connection of the gateway's own (same upstream role, application_name
//! `sluice:catalog`), never on a client's session, so a client's protocol state and
//! transaction are never touched. A snapshot is trusted for `catalog_ttl`; DDL that committed
//! through the gateway marks it stale, and a table OID it does not know refreshes it (at most
//! once a second, since a table created in a client's open transaction stays invisible to
//! the side connection until it commits).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

pub mod reader;
mod snapshot;

pub use snapshot::{CatalogFunction, CatalogRow, CatalogRows, Relation, Snapshot};

/// The query the side connection runs: one row per column, then one row per function name,
/// schema and volatility, built-ins included (two result sets).
pub const CATALOG_QUERY: &str = "SELECT c.oid, n.nspname, c.relname, c.relkind, a.attnum, a.attname, \
     CASE WHEN c.relkind IN ('v', 'm') AND a.attnum = 1 \
     AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
     THEN pg_catalog.pg_get_viewdef(c.oid) END \
     FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname <> 'pg_toast' \
     ORDER BY c.oid, a.attnum; \
     SELECT DISTINCT n.nspname, p.proname, p.provolatile = 'v' FROM pg_catalog.pg_proc p \
     JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace";

type Reader =
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<CatalogRows, String>> + Send>> + Send + Sync;

/// The cache of one upstream database.
pub struct Catalog {
    reader: Box<Reader>,
    ttl: Duration,
    current: ArcSwap<(Option<Instant>, Arc<Snapshot>)>,
    stale: AtomicBool,
    refreshing: tokio::sync::Mutex<()>,
}

/// How soon a snapshot that lacks a table is read again.
const MISSING_RETRY: Duration = Duration::from_secs(1);

impl Catalog {
    /// A cache that reads with `reader` (nothing is read until first needed).
    pub fn new<F, Fut>(ttl: Duration, reader: F) -> Catalog
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<CatalogRows, String>> + Send + 'static,
    {
        Catalog {
            reader: Box::new(move || Box::pin(reader())),
            ttl,
            current: ArcSwap::from_pointee((None, Arc::new(Snapshot::default()))),
            stale: AtomicBool::new(false),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// The last snapshot read, without reading (empty before the first read).
    pub fn peek(&self) -> Arc<Snapshot> {
        self.current.load().1.clone()
    }

    /// Marks the snapshot out of date (after DDL committed through the gateway).
    pub fn invalidate(&self) {
        self.stale.store(true, Ordering::Release);
    }

    /// A snapshot that knows `oids` if the database does, read again when stale, expired or
    /// missing one of them.
    pub async fn snapshot(&self, oids: &[u32]) -> Result<Arc<Snapshot>, String> {
        if let Some(snapshot) = self.usable(oids) {
            return Ok(snapshot);
        }
        let _one_reader = self.refreshing.lock().await;
        // Whoever held the lock may have read what we need.
        if let Some(snapshot) = self.usable(oids) {
            return Ok(snapshot);
        }
        self.stale.store(false, Ordering::Release);
        let rows = (self.reader)().await?;
        let snapshot = Arc::new(Snapshot::from_rows(rows));
        tracing::debug!(relations = snapshot.by_oid.len(), "catalog cache read");
        self.current
            .store(Arc::new((Some(Instant::now()), snapshot.clone())));
        Ok(snapshot)
    }

    fn usable(&self, oids: &[u32]) -> Option<Arc<Snapshot>> {
        let current = self.current.load();
        let (Some(read_at), snapshot) = &**current else {
            return None;
        };
        let age = read_at.elapsed();
        if self.stale.load(Ordering::Acquire) || age > self.ttl {
            return None;
        }
        let knows_all = oids
            .iter()
            .all(|oid| *oid == 0 || snapshot.by_oid.contains_key(oid));
        (knows_all || age < MISSING_RETRY).then(|| snapshot.clone())
    }
}
