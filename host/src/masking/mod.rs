//! Result masking: a plan per result set from the masking plugins, applied natively to the
//! RowDescription and each DataRow.
//!
//! A column is identified by the table OID and attribute number Postgres puts in the
//! RowDescription, resolved through the [`catalog`] cache, so `SELECT email AS e` is still
//! `customers.email`. A column Postgres reports without an origin (an expression, an aggregate,
//! a whole-row reference, a view's computed column) carries what it was derived from, from the
//! statement's [lineage](crate::analysis::Lineage) resolved against the catalog; plugins mask
//! what may carry a sensitive value.
//!
//! Masked columns (anything but `keep` and `null`) are described to the client as `text`:
//! their values are text now, and text is the same bytes in the binary format, so a driver that
//! asked for binary results still decodes them. A binary value of another type cannot be read
//! as text; `hash`, `partial` and `custom` null it.

mod action;
pub mod plan;
mod rows;
mod scrub;

pub use crate::catalog::{Catalog, CatalogFunction, CatalogRow, CatalogRows, Relation, Snapshot};
pub use action::Action;
pub use plan::{PlanFailure, ResultSet, Withheld, check_statement, plan_result};
pub use rows::{Field, HashKey, Plan, data_row_values, encode_data_row, parse_row_description};
pub use scrub::scrub_message;
