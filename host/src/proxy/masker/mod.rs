//! Masking on the wire. The client direction ([`Tracker`]) adds to each request it announces
//! (`pipeline/`) what masking needs of its answer: where each statement of a Query takes its
//! columns from, which statement or portal a Describe describes, whose plan an Execute's rows
//! take. The upstream direction ([`Masker`]) reads the pipeline's match of each answer: a
//! RowDescription gets its plan from the masking plugins (for a Describe, kept for that
//! statement or portal), and every DataRow is rewritten by the plan of the result it belongs
//! to — also the rows of an Execute that was described long before, the rest of a portal after
//! PortalSuspended, and a FETCH from a cursor (planned with the DECLARE's lineage). An Execute
//! of something never described gets a Describe of its portal injected first, answered to the
//! gateway only.
//!
//! Tracking starts at a request-cycle boundary once a masking plugin is serving, and then stays
//! on for the session: the requests announced from then on carry masking's part.

mod batch;
mod planning;
mod scrub;
mod tracker;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use tokio::io::AsyncWrite;

use super::pipeline::{Answer, Owner, PlanOf, Request, Source, Target};
use crate::analysis::{PreparedOp, Statement, StatementKind, Wrapper};
use crate::audit::{Audit, Event, MaskedColumn};
use crate::config::MaskingConfig;
use crate::identity::SessionInfo;
use crate::masking::{self, Action, Catalog, Field, Plan};
use crate::plugins::{PluginSet, SessionMaskers, wit};
use crate::proxy::shared::Shared;
use crate::wire::backend as messages;
use crate::wire::frame::{Frame, FrameWriter};
use crate::wire::frontend::pg_name;

pub use tracker::{Tracker, Unplannable};

/// State both directions see.
struct Common {
    /// The client direction has begun announcing requests with masking's part (and never
    /// stops): from then on errors and notices are scrubbed and every row is accounted for.
    tracking: AtomicBool,
    /// DDL went upstream: the catalog is read again once it has committed.
    ddl: AtomicBool,
    /// The last statement texts the client sent: an error may quote what the client wrote.
    recent: std::sync::Mutex<VecDeque<Arc<str>>>,
}

/// How many statement texts an error message may quote from.
const RECENT_TEXTS: usize = 8;

impl Common {
    fn sent(&self, text: &str) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= RECENT_TEXTS {
            recent.pop_front();
        }
        recent.push_back(Arc::from(text));
    }
}

/// Whether a request whose answer masking plans lacks masking's part: it was announced before
/// tracking began.
fn untracked(request: &Request) -> bool {
    match request {
        Request::Query(query) => query.sources.is_none(),
        Request::Describe(describe) => describe.source.is_none(),
        Request::Execute(execute) => execute.plan.is_none(),
        _ => false,
    }
}

/// A plan and what it was made from, for re-planning after a plugin reload.
struct Planned {
    plan: Arc<Plan>,
    statement: Option<Statement>,
    generation: u64,
}

/// The upstream direction's half.
pub struct Masker {
    audit: Arc<Audit>,
    /// The key of `hash` masks.
    hash_key: masking::HashKey,
    config: MaskingConfig,
    info: SessionInfo,
    maskers: SessionMaskers,
    catalog: Option<Arc<Catalog>>,
    common: Arc<Common>,
    statements: HashMap<String, Planned>,
    portals: HashMap<String, Planned>,
    /// The plan of the rows streaming now.
    current: Option<Arc<Plan>>,
    /// Rows held for a batched `custom` transform.
    batch: Vec<Bytes>,
    /// Whether errors and notices are scrubbed, by plugin set generation.
    scrubbing: Option<(u64, bool)>,
}

/// What the client gets for one upstream message.
pub enum Relay {
    /// The message as it came.
    Pass,
    Replace(Bytes),
    /// Nothing more: an answer to an injected Describe, a row held for a batch, or a row
    /// already queued masked.
    Drop,
}

/// DataRows the upstream direction may rewrite by itself, see [`Masker::rows`].
pub enum Rows<'a> {
    Unmasked,
    Masked(&'a Plan, &'a masking::HashKey),
}

/// The two halves of a session's masking, or `None` without a plugin directory.
pub fn new(shared: &Arc<Shared>, info: &SessionInfo) -> Option<(Tracker, Masker)> {
    let host = shared.plugins.clone()?;
    let common = Arc::new(Common {
        tracking: AtomicBool::new(false),
        ddl: AtomicBool::new(false),
        recent: std::sync::Mutex::new(VecDeque::new()),
    });
    let tracker = Tracker {
        common: common.clone(),
        on: false,
        statements: HashMap::new(),
        portals: HashMap::new(),
        cursors: HashMap::new(),
        sql_prepared: HashMap::new(),
    };
    let masker = Masker {
        audit: shared.audit.clone(),
        hash_key: shared.hash_key.clone(),
        config: shared.config.masking.clone(),
        info: info.clone(),
        maskers: SessionMaskers::new(host),
        catalog: shared.catalogs.get(&info.database).cloned(),
        common,
        statements: HashMap::new(),
        portals: HashMap::new(),
        current: None,
        batch: Vec::new(),
        scrubbing: None,
    };
    Some((tracker, masker))
}

impl Masker {
    fn set(&self) -> Arc<PluginSet> {
        self.maskers.host().current()
    }

    /// How the DataRows arriving now can go out without [`Masker::relay`]: those of a result
    /// whose plan is made and needs no plugin call, and every row before tracking began. `None`:
    /// each row goes through `relay` (the first row of an Execute makes its plan there;
    /// `custom` rows are batched).
    pub fn rows(&self) -> Option<Rows<'_>> {
        if !self.common.tracking.load(Ordering::Acquire) {
            return Some(Rows::Unmasked);
        }
        let plan = self.current.as_deref()?;
        if plan.has_custom() || !self.batch.is_empty() {
            return None;
        }
        Some(if plan.masks_anything() {
            Rows::Masked(plan, &self.hash_key)
        } else {
            Rows::Unmasked
        })
    }

    /// Handles one upstream message, matched by the pipeline as `answer`, queueing held rows on
    /// `client` first when this message ends their batch.
    pub async fn relay<W: AsyncWrite + Unpin>(
        &mut self,
        frame: &Frame,
        answer: &Answer<'_>,
        client: &mut FrameWriter<W>,
    ) -> Relay {
        if !self.common.tracking.load(Ordering::Acquire) {
            return Relay::Pass;
        }
        // Answers to what was sent before tracking began go as they come.
        if let Answer::Within(owner) | Answer::Complete(owner) = answer
            && untracked(owner.request)
        {
            return Relay::Pass;
        }
        if frame.tag() == b'D' {
            return self.data_row(frame, answer, client).await;
        }
        self.flush(client).await;
        match (frame.tag(), answer) {
            (b'T', Answer::Within(owner) | Answer::Complete(owner)) => {
                self.row_description(frame, *owner, client).await
            }
            (b'n', Answer::Complete(owner)) => match owner.request {
                Request::Describe(describe) => {
                    self.forget(&describe.target);
                    if describe.injected {
                        Relay::Drop
                    } else {
                        Relay::Pass
                    }
                }
                _ => Relay::Pass,
            },
            (b'C' | b'I' | b's', _) => {
                self.current = None;
                Relay::Pass
            }
            (b'E', _) => {
                let relay = self.scrub(frame).await;
                self.failed();
                relay
            }
            (b'N', _) => self.scrub(frame).await,
            (b'3', Answer::Complete(owner)) => {
                if let Request::Close(target) = owner.request {
                    self.forget(target);
                }
                Relay::Pass
            }
            (b'Z', _) => {
                self.current = None;
                // Outside a transaction no portal survives.
                if frame.body().first() == Some(&b'I') {
                    self.portals.clear();
                }
                // Committed (or no transaction): DDL sent before is visible to the catalog now.
                if frame.body().first() == Some(&b'I')
                    && self.common.ddl.swap(false, Ordering::AcqRel)
                    && let Some(catalog) = &self.catalog
                {
                    catalog.invalidate();
                }
                Relay::Pass
            }
            _ => Relay::Pass,
        }
    }

    /// Drops the plan kept for a statement or portal.
    fn forget(&mut self, target: &Target) {
        match target {
            Target::Statement(name) => self.statements.remove(name),
            Target::Portal(name) => self.portals.remove(name),
        };
    }

    /// An ErrorResponse: Postgres skips the rest of the cycle (the rest of a query string, or
    /// everything up to Sync).
    pub fn failed(&mut self) {
        self.current = None;
    }

    /// The upstream paused: rows held for a batch go out now.
    pub async fn idle<W: AsyncWrite + Unpin>(&mut self, client: &mut FrameWriter<W>) {
        self.flush(client).await;
    }

    async fn data_row<W: AsyncWrite + Unpin>(
        &mut self,
        frame: &Frame,
        answer: &Answer<'_>,
        client: &mut FrameWriter<W>,
    ) -> Relay {
        if self.current.is_none() {
            self.current = Some(self.execution_plan(frame, answer, client).await);
        }
        match self.rows() {
            Some(Rows::Unmasked) => Relay::Pass,
            Some(Rows::Masked(plan, key)) => {
                client.queue_with(|out| plan.apply_into(frame.raw(), key, None, out));
                Relay::Drop
            }
            // Held for a batched `custom` transform (behind any rows already held).
            None => {
                self.batch.push(frame.raw().clone());
                if self.batch.len() >= self.config.transform_batch {
                    self.flush(client).await;
                }
                Relay::Drop
            }
        }
    }
}
