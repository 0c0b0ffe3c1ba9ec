//! Masking on the wire. The client direction ([`Tracker`]) adds to each request it announces
//! (`pipeline.rs`) what masking needs of its answer: where each statement of a Query takes its
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

/// Whether `word` stands in `text` as a whole token (not inside a longer name or number).
fn has_token(text: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    let part_of_name = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    text.match_indices(word).any(|(at, _)| {
        !part_of_name(text[..at].chars().next_back())
            && !part_of_name(text[at + word.len()..].chars().next())
    })
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

    async fn row_description<W: AsyncWrite + Unpin>(
        &mut self,
        frame: &Frame,
        owner: Owner<'_>,
        client: &mut FrameWriter<W>,
    ) -> Relay {
        let Some(fields) = masking::parse_row_description(frame.body()) else {
            return Relay::Replace(messages::error(
                crate::wire::sqlstate::PROTOCOL_VIOLATION,
                "sluice: malformed RowDescription from the upstream withheld",
            ));
        };
        /// Where the plan goes: to the rows streaming next, or kept for a statement or portal
        /// (and whether the Describe was the gateway's own).
        enum Goes {
            Current,
            Kept(Target, bool),
        }
        let (target, statement, record) = match owner.request {
            Request::Query(query) => {
                let source = query
                    .sources
                    .as_ref()
                    .and_then(|s| s.get(owner.part as usize));
                (
                    Goes::Current,
                    source.and_then(|s| s.0.clone()),
                    query.record.map(|r| r.statement),
                )
            }
            Request::Describe(describe) => (
                Goes::Kept(describe.target.clone(), describe.injected),
                describe.source.as_ref().and_then(|s| s.0.clone()),
                describe.record,
            ),
            // Nothing else is described; whatever it is, no lineage plans it.
            other => (Goes::Current, None, other.record().map(|r| r.statement)),
        };
        let generation = self.set().generation;
        // The client never sees an injected Describe: it decodes with the types it knows.
        let described = match target {
            Goes::Kept(Target::Portal(_), true) => Some(vec![false; fields.len()]),
            _ => None,
        };
        let plan = Arc::new(
            self.plan(statement.as_ref(), fields, described, client, record)
                .await,
        );
        let described = plan.row_description(frame.raw());
        let planned = Planned {
            plan: plan.clone(),
            statement,
            generation,
        };
        match target {
            Goes::Current => {
                self.current = Some(plan);
                Relay::Replace(described)
            }
            Goes::Kept(Target::Statement(name), injected) => {
                self.statements.insert(name, planned);
                if injected {
                    Relay::Drop
                } else {
                    Relay::Replace(described)
                }
            }
            Goes::Kept(Target::Portal(portal), injected) => {
                self.portals.insert(portal, planned);
                if injected {
                    Relay::Drop
                } else {
                    Relay::Replace(described)
                }
            }
        }
    }

    /// Asks the plugins; a failure withholds every value and warns the client.
    async fn plan<W: AsyncWrite + Unpin>(
        &mut self,
        statement: Option<&Statement>,
        fields: Vec<Field>,
        described: Option<Vec<bool>>,
        client: &mut FrameWriter<W>,
        record: Option<u64>,
    ) -> Plan {
        let set = self.set();
        let Some(catalog) = self.catalog.clone() else {
            return Plan::withhold_all(fields);
        };
        let outcome = masking::plan_result(
            &set,
            &mut self.maskers,
            &self.info,
            &catalog,
            masking::ResultSet {
                statement,
                fields,
                described,
            },
            self.config.user_functions,
        )
        .await;
        let (plan, failure) = match outcome {
            Ok((plan, withheld)) => {
                if !withheld.is_empty() {
                    let columns: Vec<String> = withheld
                        .iter()
                        .map(|w| format!("\"{}\" ({})", w.column, w.why))
                        .collect();
                    tracing::info!(columns = %columns.join(", "), "result columns withheld");
                    client.queue(&messages::warning(format!(
                        "sluice: values withheld: {}",
                        columns.join(", ")
                    )));
                }
                (plan, None)
            }
            Err((plan, failure)) => {
                tracing::warn!(%failure, "masking plan failed; result values withheld");
                client.queue(&messages::warning(format!(
                    "sluice: every value of this result is withheld: {failure}"
                )));
                (plan, Some(failure.to_string()))
            }
        };
        if plan.masks_anything() || failure.is_some() {
            self.record(&plan, failure, record);
        }
        plan
    }

    fn record(&self, plan: &Plan, failure: Option<String>, statement: Option<u64>) {
        if !self.audit.enabled() {
            return;
        }
        let snapshot = self.catalog.as_ref().map(|c| c.peek());
        let columns = plan
            .fields
            .iter()
            .zip(&plan.actions)
            .filter(|(_, action)| **action != Action::Keep)
            .map(|(field, action)| MaskedColumn {
                name: field.name.clone(),
                source: snapshot
                    .as_ref()
                    .and_then(|s| s.column(field.table_oid, field.attnum))
                    .map(|(s, _)| format!("{}.{}.{}", s.schema, s.table, s.column)),
                mask: action.label(),
            })
            .collect();
        self.audit.record(Event::Masking {
            session: self.info.id,
            statement,
            columns,
            failure,
        });
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

    /// The plan of the Execute whose rows start now: its portal's or its statement's, made
    /// again if the plugins changed since (values of columns described unmasked are then
    /// nulled, as they cannot change type any more).
    async fn execution_plan<W: AsyncWrite + Unpin>(
        &mut self,
        frame: &Frame,
        answer: &Answer<'_>,
        client: &mut FrameWriter<W>,
    ) -> Arc<Plan> {
        let withhold = |frame: &Frame| {
            let count = masking::data_row_values(frame.body()).map_or(0, |v| v.len());
            Arc::new(Plan::withhold_all(vec![
                Field {
                    name: String::new(),
                    table_oid: 0,
                    attnum: 0,
                    type_oid: 25,
                    type_len: -1,
                    type_modifier: -1,
                    format: 0,
                };
                count
            ]))
        };
        let (planned, record) = match answer {
            Answer::Within(Owner {
                request: Request::Execute(execute),
                ..
            }) => {
                let planned = match &execute.plan {
                    Some(PlanOf::Portal) => self.portals.get(&execute.portal),
                    Some(PlanOf::Statement(name)) => self.statements.get(name),
                    None => None,
                };
                (planned, execute.record.map(|r| r.statement))
            }
            // Rows of a statement no RowDescription planned, or rows nothing announced:
            // nothing accounts for them.
            _ => return withhold(frame),
        };
        let Some(planned) = planned else {
            return withhold(frame);
        };
        let generation = self.set().generation;
        if planned.generation == generation {
            return planned.plan.clone();
        }
        let (statement, fields, described) = (
            planned.statement.clone(),
            planned.plan.fields.clone(),
            planned.plan.described_as_text.clone(),
        );
        Arc::new(
            self.plan(statement.as_ref(), fields, Some(described), client, record)
                .await,
        )
    }

    /// Sends held rows, with their `custom` columns transformed in one call per column and
    /// plugin.
    async fn flush<W: AsyncWrite + Unpin>(&mut self, client: &mut FrameWriter<W>) {
        if self.batch.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut self.batch);
        let Some(plan) = self.current.clone() else {
            return;
        };
        let set = self.set();
        let mut transformed: HashMap<usize, Vec<Option<String>>> = HashMap::new();
        for (index, action) in plan.actions.iter().enumerate() {
            let Action::Custom(plugins) = action else {
                continue;
            };
            if !plan.textual(index) {
                continue;
            }
            let mut values: Vec<Option<String>> = rows
                .iter()
                .map(|row| {
                    masking::data_row_values(&row[5..])
                        .and_then(|v| v.get(index).copied().flatten())
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
                .collect();
            let column = wit::Column {
                name: plan.fields[index].name.clone(),
                source: None,
                derived_from: Vec::new(),
                type_oid: plan.fields[index].type_oid,
                format: wit::ValueFormat::Text,
            };
            let mut ok = true;
            for &plugin_index in plugins {
                let Some(plugin) = set.maskers.get(plugin_index) else {
                    ok = false;
                    break;
                };
                match self
                    .maskers
                    .transform(plugin, &self.info, &column, &values)
                    .await
                {
                    Ok(out) => values = out,
                    Err(failure) => {
                        tracing::warn!(plugin = %plugin.name, %failure, "custom mask failed; values withheld");
                        client.queue(&messages::warning(format!(
                            "sluice: values of column \"{}\" withheld: masking plugin \"{}\" failed: {failure}",
                            column.name, plugin.name
                        )));
                        ok = false;
                        break;
                    }
                }
            }
            // Withheld (None) when any plugin of the chain failed.
            transformed.insert(index, if ok { values } else { vec![None; rows.len()] });
        }
        for (row_index, row) in rows.iter().enumerate() {
            let custom = |column: usize| -> Option<Option<String>> {
                transformed
                    .get(&column)
                    .map(|values| values.get(row_index).cloned().flatten())
            };
            let key = &self.hash_key;
            client.queue_with(|out| plan.apply_into(row, key, Some(&custom), out));
        }
    }

    /// An ErrorResponse or NoticeResponse while masking is active, without echoed values.
    async fn scrub(&mut self, frame: &Frame) -> Relay {
        if !self.scrubbing().await {
            return Relay::Pass;
        }
        let fields = messages::error_fields(frame.body());
        let snapshot = self.catalog.as_ref().map(|c| c.peek());
        let texts: Vec<Arc<str>> = self
            .common
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let known = |quoted: &str| {
            snapshot.as_ref().is_some_and(|s| s.knows_name(quoted))
                || texts.iter().any(|t| has_token(t, quoted))
        };
        match masking::scrub_message(frame.tag(), &fields, &known) {
            Some(scrubbed) => Relay::Replace(scrubbed),
            None => Relay::Pass,
        }
    }

    /// Whether any masking plugin masks something in this session (a plugin that fails to
    /// open counts: fail closed).
    async fn scrubbing(&mut self) -> bool {
        let set = self.set();
        if let Some((generation, on)) = self.scrubbing
            && generation == set.generation
        {
            return on;
        }
        self.maskers.retain(&set);
        let on = self.maskers.any_active(&set, &self.info).await;
        self.scrubbing = Some((set.generation, on));
        on
    }
}

#[cfg(test)]
mod tests {
    use super::has_token;

    #[test]
    fn quoted_text_counts_as_sent_only_as_a_whole_token() {
        assert!(has_token("SELECT nope FROM t", "nope"));
        assert!(has_token("SELECT \"Mixed Case\" FROM t", "Mixed Case"));
        assert!(!has_token("SELECT nopenope FROM t", "nope"));
        assert!(!has_token("SELECT a FROM t WHERE id = 12", "1"));
        assert!(!has_token("SELECT 1", ""));
    }
}
