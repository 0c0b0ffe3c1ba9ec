//! How a result gets its plan: from the masking plugins at its RowDescription (kept for a
//! described statement or portal), or, for the rows of an Execute, the plan its portal or
//! statement got when described, made again if the plugins changed since; and the audit record
//! of what a plan masks.

use super::*;

impl Masker {
    pub(super) async fn row_description<W: AsyncWrite + Unpin>(
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
    pub(super) async fn plan<W: AsyncWrite + Unpin>(
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

    pub(super) fn record(&self, plan: &Plan, failure: Option<String>, statement: Option<u64>) {
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

    /// The plan of the Execute whose rows start now: its portal's or its statement's, made
    /// again if the plugins changed since (values of columns described unmasked are then
    /// nulled, as they cannot change type any more).
    pub(super) async fn execution_plan<W: AsyncWrite + Unpin>(
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
}
