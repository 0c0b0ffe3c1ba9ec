//! Asking the masking plugins: a plan per result set, and the check of statements whose values
//! would leave without a result set to mask (COPY ... TO, writes that copy values elsewhere).

use std::sync::Arc;

use super::Action;
use super::catalog::{Catalog, Snapshot};
use super::rows::{Field, Plan};
use crate::analysis::{Statement, StatementKind};
use crate::plugins::{CallFailure, PluginSet, SessionMaskers, wit};

/// Why no plan could be made. The result is withheld (every value NULL) or the statement
/// refused: never passed unmasked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PlanFailure {
    #[error("the catalog could not be read: {0}")]
    Catalog(String),
    #[error("masking plugin \"{plugin}\" failed: {failure}")]
    Plugin {
        plugin: Arc<str>,
        failure: CallFailure,
    },
}

/// The plan for a result set described by `fields`, produced by `statement` (`None`: not
/// known, then computed columns are withheld). `described`: how the client already saw the
/// columns described, when it did (a Describe answered before this execution's plugins).
pub async fn plan_result(
    set: &PluginSet,
    maskers: &mut SessionMaskers,
    session: &wit::Session,
    catalog: &Catalog,
    statement: Option<&Statement>,
    fields: Vec<Field>,
    described: Option<Vec<bool>>,
) -> Result<Plan, (Plan, PlanFailure)> {
    let finish =
        |fields: Vec<Field>, actions: Vec<Action>, described: Option<Vec<bool>>| match described {
            Some(as_text) => Plan::with_description(fields, actions, as_text),
            None => Plan::new(fields, actions),
        };
    maskers.retain(set);
    // An exempt session (every plugin inactive) costs no catalog lookup or lowering.
    if fields.is_empty() || !maskers.any_active(set, session).await {
        let keep = vec![Action::Keep; fields.len()];
        return Ok(finish(fields, keep, described));
    }
    let oids: Vec<u32> = fields.iter().map(|f| f.table_oid).collect();
    let snapshot = match catalog.snapshot(&oids).await {
        Ok(snapshot) => snapshot,
        Err(e) => return Err((Plan::withhold_all(fields), PlanFailure::Catalog(e))),
    };
    let (columns, unknown) = columns(&snapshot, statement, &fields);
    let lowered = lowered(statement);
    let mut actions = vec![Action::Keep; fields.len()];
    for (index, plugin) in set.maskers.iter().enumerate() {
        match maskers.plan(plugin, session, &lowered, &columns).await {
            Ok(Some(masks)) => {
                // Values nothing can account for are withheld wherever masking is on.
                for (action, &unknown) in actions.iter_mut().zip(&unknown) {
                    if unknown {
                        *action = Action::Null;
                    }
                }
                for (action, mask) in actions.iter_mut().zip(masks) {
                    *action = std::mem::replace(action, Action::Keep)
                        .stricter(Action::from_wit(mask, index));
                }
            }
            Ok(None) => {}
            Err(failure) => {
                let failure = PlanFailure::Plugin {
                    plugin: plugin.name.clone(),
                    failure,
                };
                return Err((Plan::withhold_all(fields), failure));
            }
        }
    }
    Ok(finish(fields, actions, described))
}

/// The columns as plugins see them, and which ones cannot be accounted for at all: computed
/// by a statement the gateway could not analyse, or from a table the catalog cannot see (one
/// created in the client's still open transaction).
fn columns(
    snapshot: &Snapshot,
    statement: Option<&Statement>,
    fields: &[Field],
) -> (Vec<wit::Column>, Vec<bool>) {
    let tables = statement.map(|s| snapshot.tables(s.tables_read.iter().chain(&s.tables_written)));
    let mut unknown = Vec::with_capacity(fields.len());
    let columns = fields
        .iter()
        .enumerate()
        .map(|(index, field)| {
            let (source, mut derived_from) = match snapshot.column(field.table_oid, field.attnum) {
                Some((source, derived)) => (Some(source), derived),
                None => (None, Vec::new()),
            };
            let computed = source.is_none();
            // Attribute 0 is a whole-row reference to a known table: computed, not unknown.
            let unseen_table = field.table_oid != 0 && snapshot.relation(field.table_oid).is_none();
            unknown.push((computed && statement.is_none()) || unseen_table);
            if let (true, Some(statement), Some(tables)) = (computed, statement, &tables) {
                let refs = statement.lineage.output(index, fields.len());
                snapshot.resolve(refs, tables, &mut derived_from, 0);
            }
            wit::Column {
                name: field.name.clone(),
                source,
                derived_from,
                type_oid: field.type_oid,
                format: if field.format == 1 {
                    wit::ValueFormat::Binary
                } else {
                    wit::ValueFormat::Text
                },
            }
        })
        .collect();
    (columns, unknown)
}

fn lowered(statement: Option<&Statement>) -> wit::Statement {
    match statement {
        Some(s) => crate::policy::statement_to_wit(s, &[]),
        None => wit::Statement {
            text: String::new(),
            fingerprint: 0,
            kind: wit::StatementKind::Other,
            command: String::new(),
            parameter: None,
            tables_read: Vec::new(),
            tables_written: Vec::new(),
            functions: Vec::new(),
            has_where: false,
            unfiltered_write: false,
            writes: false,
            copy_program: false,
            params: Vec::new(),
        },
    }
}

/// Before `statement` runs: `Some(reason)` refuses it because values of masked columns would
/// leave unmasked — sent by COPY ... TO, or written into other rows and tables (`INSERT ...
/// SELECT`, `UPDATE ... SET a = b`, `CREATE TABLE ... AS`, `SELECT ... INTO`, `CREATE VIEW`).
pub async fn check_statement(
    set: &PluginSet,
    maskers: &mut SessionMaskers,
    session: &wit::Session,
    catalog: &Catalog,
    statement: &Statement,
) -> Result<Option<String>, PlanFailure> {
    let copies_out = statement.kind == StatementKind::CopyOut || statement.copy_program;
    let copies_values = statement.writes && !statement.lineage.written.is_empty();
    if !(copies_out || copies_values) {
        return Ok(None);
    }
    maskers.retain(set);
    if !maskers.any_active(set, session).await {
        return Ok(None);
    }
    let snapshot = catalog.snapshot(&[]).await.map_err(PlanFailure::Catalog)?;
    let tables = snapshot.tables(
        statement
            .tables_read
            .iter()
            .chain(&statement.tables_written),
    );
    let (what, refs) = if copies_out {
        ("COPY ... TO", &statement.lineage.all)
    } else {
        ("a write", &statement.lineage.written)
    };
    // Each table column the values may carry, asked about as a plain result column would be.
    let mut sources = Vec::new();
    if copies_out && refs.is_empty() {
        // COPY table TO: every column of the table.
        snapshot.resolve(&[crate::analysis::Ref::WholeRow], &tables, &mut sources, 0);
    } else {
        snapshot.resolve(refs, &tables, &mut sources, 0);
    }
    if sources.is_empty() {
        return Ok(None);
    }
    let columns: Vec<wit::Column> = sources
        .into_iter()
        .map(|source| wit::Column {
            name: source.column.clone(),
            source: Some(source),
            derived_from: Vec::new(),
            type_oid: 25,
            format: wit::ValueFormat::Text,
        })
        .collect();
    let lowered = lowered(Some(statement));
    for plugin in &set.maskers {
        let masks = maskers
            .plan(plugin, session, &lowered, &columns)
            .await
            .map_err(|failure| PlanFailure::Plugin {
                plugin: plugin.name.clone(),
                failure,
            })?;
        let masked: Vec<String> = masks
            .into_iter()
            .flatten()
            .zip(&columns)
            .filter(|(mask, _)| !matches!(mask, wit::Mask::Keep))
            .filter_map(|(_, column)| column.source.as_ref())
            .map(|s| format!("{}.{}.{}", s.schema, s.table, s.column))
            .collect();
        if !masked.is_empty() {
            return Ok(Some(format!(
                "{what} would send values of masked columns ({}) past masking plugin \"{}\"",
                masked.join(", "),
                plugin.name
            )));
        }
    }
    Ok(None)
}
