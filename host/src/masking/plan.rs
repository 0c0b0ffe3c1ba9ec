//! Asking the masking plugins: a plan per result set, and the check of statements whose values
//! would leave without a result set to mask (COPY ... TO, writes that copy values elsewhere).

use std::sync::Arc;

use super::action::Action;
use super::rows::{Field, Plan};
use crate::analysis::{Statement, StatementKind};
use crate::catalog::{Catalog, Relation, Snapshot};
use crate::config::UserFunctions;
use crate::plugins::{CallFailure, LazyStatement, PluginSet, SessionMaskers, wit};

/// Built-in functions that read tables by name or run SQL text: what they return is no
/// argument's value, and the analysis cannot see what they read. Refused while masking is on.
const READS_TABLES: &[&str] = &[
    "query_to_xml",
    "query_to_xml_and_xmlschema",
    "query_to_xmlschema",
    "table_to_xml",
    "table_to_xml_and_xmlschema",
    "table_to_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "schema_to_xml",
    "schema_to_xml_and_xmlschema",
    "schema_to_xmlschema",
    "database_to_xml",
    "database_to_xml_and_xmlschema",
    "database_to_xmlschema",
    "ts_stat",
];

/// One result set to plan: the statement that produced it (`None`: not known, then computed
/// columns are withheld), its fields, and how the client already saw them described when it
/// did (a Describe answered before this execution's plugins).
pub struct ResultSet<'a> {
    pub statement: Option<&'a Statement>,
    pub fields: Vec<Field>,
    pub described: Option<Vec<bool>>,
}

/// A column whose values were withheld because nothing can account for them, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withheld {
    pub column: String,
    pub why: &'static str,
}

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

/// The plan for `result`, with the columns withheld as unaccountable (the client is told which).
pub async fn plan_result(
    set: &PluginSet,
    maskers: &mut SessionMaskers,
    session: &crate::identity::SessionInfo,
    catalog: &Catalog,
    result: ResultSet<'_>,
    user_functions: UserFunctions,
) -> Result<(Plan, Vec<Withheld>), (Plan, PlanFailure)> {
    let ResultSet {
        statement,
        fields,
        described,
    } = result;
    let finish =
        |fields: Vec<Field>, actions: Vec<Action>, described: Option<Vec<bool>>| match described {
            Some(as_text) => Plan::with_description(fields, actions, as_text),
            None => Plan::new(fields, actions),
        };
    maskers.retain(set);
    // An exempt session (every plugin inactive) costs no catalog lookup or lowering.
    if fields.is_empty() || !maskers.any_active(set, session).await {
        let keep = vec![Action::Keep; fields.len()];
        return Ok((finish(fields, keep, described), Vec::new()));
    }
    let oids: Vec<u32> = fields.iter().map(|f| f.table_oid).collect();
    let snapshot = match catalog.snapshot(&oids).await {
        Ok(snapshot) => snapshot,
        Err(e) => return Err((Plan::withhold_all(fields), PlanFailure::Catalog(e))),
    };
    let (columns, unknown) = columns(&snapshot, statement, &fields, user_functions);
    let lowered = LazyStatement::new(statement);
    let mut actions = vec![Action::Keep; fields.len()];
    for (index, plugin) in set.maskers.iter().enumerate() {
        match maskers.plan(plugin, session, &lowered, &columns).await {
            Ok(Some(masks)) => {
                // Values nothing can account for are withheld wherever masking is on.
                for (action, unknown) in actions.iter_mut().zip(&unknown) {
                    if unknown.is_some() {
                        *action = Action::Null;
                    }
                }
                for (action, mask) in actions.iter_mut().zip(masks.iter()) {
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
    let withheld = fields
        .iter()
        .zip(unknown)
        .filter_map(|(field, why)| {
            why.map(|why| Withheld {
                column: field.name.clone(),
                why,
            })
        })
        .collect();
    Ok((finish(fields, actions, described), withheld))
}

/// The columns as plugins see them, and which ones cannot be accounted for at all (with why):
/// computed by a statement the gateway could not analyse, from a table the catalog cannot see
/// (one created in the client's still open transaction), or from the planner's statistics.
fn columns(
    snapshot: &Snapshot,
    statement: Option<&Statement>,
    fields: &[Field],
    user_functions: UserFunctions,
) -> (Vec<wit::Column>, Vec<Option<&'static str>>) {
    let tables = statement.map(|s| snapshot.tables(s.tables_read.iter().chain(&s.tables_written)));
    // With `derive`, a user-defined function's result may carry any column of its schema.
    let function_tables: Vec<&Arc<Relation>> = match (statement, user_functions) {
        (Some(statement), UserFunctions::Derive) => statement
            .functions
            .iter()
            .filter(|f| snapshot.user_function(f))
            .flat_map(|f| snapshot.schema_tables(f.rsplit_once('.').map(|(s, _)| s)))
            .collect(),
        _ => Vec::new(),
    };
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
            let relation = snapshot.relation(field.table_oid);
            unknown.push(if field.table_oid != 0 && relation.is_none() {
                Some("its table is not in the catalog (created in a transaction still open?)")
            } else if relation.is_some_and(|r| r.statistics) {
                Some("the planner's statistics carry values of every column")
            } else if computed && statement.is_none() {
                Some("it is computed by a statement the gateway could not analyse")
            } else {
                None
            });
            if let (true, Some(statement), Some(tables)) = (computed, statement, &tables) {
                let refs = statement.lineage.output(index, fields.len());
                snapshot.resolve(refs, tables, &mut derived_from, 0);
                if !function_tables.is_empty() {
                    snapshot.resolve(
                        &[crate::analysis::Ref::WholeRow],
                        &function_tables,
                        &mut derived_from,
                        0,
                    );
                }
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

/// Before `statement` runs: `Some(reason)` refuses it because values of masked columns would
/// leave unmasked or out of the gateway's sight: sent by COPY ... TO; written into other rows
/// and tables (`INSERT ... SELECT`, `UPDATE ... SET a = b`, `CREATE TABLE ... AS`, `SELECT ...
/// INTO`, `CREATE VIEW`) or stashed (`pg_notify`, `set_config`); read from the planner's
/// statistics; or handed out by code the gateway cannot see into (a user-defined function with
/// `user_functions = "refuse"`, a DO block, a built-in that runs SQL or reads a table by name).
pub async fn check_statement(
    set: &PluginSet,
    maskers: &mut SessionMaskers,
    session: &crate::identity::SessionInfo,
    catalog: &Catalog,
    statement: &Statement,
    user_functions: UserFunctions,
) -> Result<Option<String>, PlanFailure> {
    let copies_out = statement.kind == StatementKind::CopyOut || statement.copy_program;
    let copies_values = !statement.lineage.written.is_empty();
    let opaque = statement.kind == StatementKind::DoBlock || !statement.functions.is_empty();
    if !(copies_out || copies_values || opaque || !statement.tables_read.is_empty()) {
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
    if let Some(statistics) = tables.iter().find(|t| t.statistics) {
        return Ok(Some(format!(
            "{}.{} is the planner's statistics (or reads them), which carry values of masked columns",
            statistics.schema, statistics.name
        )));
    }
    if statement.kind == StatementKind::DoBlock {
        return Ok(Some(
            "a DO block runs code the gateway cannot see into, which could hand out values of masked columns".into(),
        ));
    }
    for function in &statement.functions {
        let bare = function.rsplit('.').next().unwrap_or(function);
        if READS_TABLES.contains(&bare.to_ascii_lowercase().as_str()) {
            return Ok(Some(format!(
                "function {function} reads tables the gateway cannot see, which could hand out values of masked columns"
            )));
        }
        if user_functions == UserFunctions::Refuse && snapshot.user_function(function) {
            return Ok(Some(format!(
                "function {function} is user-defined: its body could hand out values of masked columns (masking.user_functions = \"refuse\")"
            )));
        }
    }
    // `c.leak` calls function `leak` on the row when `c` has no column of that name.
    if user_functions == UserFunctions::Refuse {
        let attribute_call = statement
            .lineage
            .all
            .iter()
            .chain(&statement.lineage.filters)
            .filter_map(|r| match r {
                crate::analysis::Ref::Column(name) => Some(name),
                crate::analysis::Ref::WholeRow => None,
            })
            .find(|name| {
                snapshot.user_function(name)
                    && !tables
                        .iter()
                        .any(|t| t.columns.iter().flatten().any(|c| c == *name))
            });
        if let Some(name) = attribute_call {
            return Ok(Some(format!(
                "{name} is a user-defined function called on a row: its body could hand out values of masked columns (masking.user_functions = \"refuse\")"
            )));
        }
    }
    let lowered = LazyStatement::new(Some(statement));
    // Strict plugins: a masked column answers no question in a condition or an ordering.
    if set.maskers.iter().any(|p| p.strict) && !statement.lineage.filters.is_empty() {
        let mut sources = Vec::new();
        snapshot.resolve(&statement.lineage.filters, &tables, &mut sources, 0);
        if let Some((plugin, masked)) =
            masked_among(set, maskers, session, &lowered, sources, true).await?
        {
            return Ok(Some(format!(
                "masked columns ({}) may not be used in conditions or orderings (masking plugin \"{plugin}\" is strict)",
                masked.join(", ")
            )));
        }
    }
    if !(copies_out || copies_values) {
        return Ok(None);
    }
    let (what, refs) = if copies_out {
        ("COPY ... TO", &statement.lineage.all)
    } else {
        (
            "a write (or pg_notify, set_config)",
            &statement.lineage.written,
        )
    };
    // Each table column the values may carry, asked about as a plain result column would be.
    let mut sources = Vec::new();
    if copies_out && refs.is_empty() {
        // COPY table TO: every column of the table.
        snapshot.resolve(&[crate::analysis::Ref::WholeRow], &tables, &mut sources, 0);
    } else {
        snapshot.resolve(refs, &tables, &mut sources, 0);
    }
    Ok(
        masked_among(set, maskers, session, &lowered, sources, false)
            .await?
            .map(|(plugin, masked)| {
                format!(
                    "{what} would send values of masked columns ({}) past masking plugin \"{plugin}\"",
                    masked.join(", ")
                )
            }),
    )
}

/// The first plugin (of the strict ones, with `only_strict`) that masks some of `sources`,
/// asked about them as plain result columns, with the columns it masks.
async fn masked_among(
    set: &PluginSet,
    maskers: &mut SessionMaskers,
    session: &crate::identity::SessionInfo,
    lowered: &LazyStatement<'_>,
    sources: Vec<wit::ColumnSource>,
    only_strict: bool,
) -> Result<Option<(Arc<str>, Vec<String>)>, PlanFailure> {
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
    for plugin in set.maskers.iter().filter(|p| p.strict || !only_strict) {
        let masks = maskers
            .plan(plugin, session, lowered, &columns)
            .await
            .map_err(|failure| PlanFailure::Plugin {
                plugin: plugin.name.clone(),
                failure,
            })?;
        let masked: Vec<String> = masks
            .iter()
            .flat_map(|masks| masks.iter())
            .zip(&columns)
            .filter(|(mask, _)| !matches!(mask, wit::Mask::Keep))
            .filter_map(|(_, column)| column.source.as_ref())
            .map(|s| format!("{}.{}.{}", s.schema, s.table, s.column))
            .collect();
        if !masked.is_empty() {
            return Ok(Some((plugin.name.clone(), masked)));
        }
    }
    Ok(None)
}
