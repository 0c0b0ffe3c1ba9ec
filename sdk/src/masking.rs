//! Masking plugins: the [`Masker`] trait, its export, and matching a column's source.

use crate::session::{SESSION, opened};
use crate::{
    Column, ColumnSource, Mask, PluginError, ReuseScope, Session, Statement, TablePattern, TableRef,
};

/// A masking plugin: plans how each result set of its session is masked.
pub trait Masker {
    /// Called once per instance with its session; `false` when this plugin masks nothing in
    /// it (the gateway then never calls it again for the session). An error withholds every
    /// result value of the session.
    fn open(_session: &Session) -> Result<bool, PluginError> {
        Ok(true)
    }

    /// A mask for each of `columns`, in order.
    fn plan(
        session: &Session,
        statement: Statement,
        columns: Vec<Column>,
    ) -> Result<Vec<Mask>, PluginError>;

    /// How far the gateway may reuse this plugin's plans in a session, asked once after
    /// [`Masker::open`]: [`ReuseScope::SameColumns`] when [`Masker::plan`] depends only on the
    /// session, config and the columns (never on the statement, the time or state kept between
    /// calls) and [`Masker::transform`] only on its column, the session and config (never on
    /// the plan made last), which saves a call per result set. Over-stating it masks results
    /// by stale plans.
    fn plan_reuse() -> ReuseScope {
        ReuseScope::EveryResult
    }

    /// The values of a column planned as [`Mask::Custom`], transformed; as many as given.
    fn transform(
        _session: &Session,
        _column: Column,
        _values: Vec<Option<String>>,
    ) -> Result<Vec<Option<String>>, PluginError> {
        Err(PluginError::Other(
            "planned a custom mask without implementing transform".into(),
        ))
    }
}

impl<T: Masker> crate::masking_wit::exports::sluice::plugin::masking::Guest for T {
    fn open(session: Session) -> Result<bool, PluginError> {
        let active = T::open(&session)?;
        SESSION
            .set(session)
            .map_err(|_| PluginError::Other("open was called twice".into()))?;
        Ok(active)
    }

    fn plan(statement: Statement, columns: Vec<Column>) -> Result<Vec<Mask>, PluginError> {
        T::plan(opened()?, statement, columns)
    }

    fn transform(
        column: Column,
        values: Vec<Option<String>>,
    ) -> Result<Vec<Option<String>>, PluginError> {
        T::transform(opened()?, column, values)
    }
}

impl<T: Masker> crate::masking_wit::exports::sluice::plugin::masking_reuse::Guest for T {
    fn scope() -> ReuseScope {
        T::plan_reuse()
    }
}

/// Exports a type implementing [`Masker`] as this component's masking plugin.
#[macro_export]
macro_rules! export_masker {
    ($ty:ident) => {
        $crate::masking_wit::export_masking_bindings!($ty with_types_in $crate::masking_wit);
    };
}

impl ColumnSource {
    /// Whether this is `table_pattern`'s column `column` (both as a [`TablePattern`] would
    /// match, `*` allowed for the column).
    pub fn is(&self, table: &TablePattern, column: &str) -> bool {
        (column == "*" || column.eq_ignore_ascii_case(&self.column))
            && table.matches(
                &TableRef {
                    schema: Some(self.schema.clone()),
                    name: self.table.clone(),
                },
                &[],
            )
    }
}
