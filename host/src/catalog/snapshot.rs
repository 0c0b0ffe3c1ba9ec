//! One reading of a database's catalog: its relations with their columns and, for user views,
//! the lineage of their definitions; its functions; and the answers masking and the gate ask
//! of it (a column's source, a name's meaning, a function's facts).

use std::collections::HashMap;
use std::sync::Arc;

use crate::analysis::{Lineage, Ref, TableRef};
use crate::plugins::wit::ColumnSource;

/// Schemas whose relations are the system's, not the user's.
const SYSTEM_SCHEMAS: &[&str] = &["pg_catalog", "information_schema"];

/// System relations that carry values of user columns: the planner's statistics.
const STATISTICS: &[&str] = &[
    "pg_statistic",
    "pg_stats",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    "pg_statistic_ext_data",
];

/// What the side connection read: both result sets of [`CATALOG_QUERY`].
#[derive(Debug, Clone, Default)]
pub struct CatalogRows {
    pub relations: Vec<CatalogRow>,
    /// Every function (and procedure, aggregate...), built-ins included.
    pub functions: Vec<CatalogFunction>,
}

/// A function (one row per schema, name and volatility its overloads have).
#[derive(Debug, Clone)]
pub struct CatalogFunction {
    pub schema: String,
    pub name: String,
    /// Declared VOLATILE (the default): it may write, whatever the statement calling it looks
    /// like.
    pub volatile: bool,
}

/// One row of [`CATALOG_QUERY`].
#[derive(Debug, Clone)]
pub struct CatalogRow {
    pub oid: u32,
    pub schema: String,
    pub table: String,
    pub kind: char,
    pub attnum: i16,
    pub column: String,
    pub view_definition: Option<String>,
}

/// A table, view or foreign table.
#[derive(Debug, Clone)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// Column names by attribute number − 1 (`None` for dropped columns).
    pub columns: Vec<Option<String>>,
    /// For a view: what its definition's output columns read, and the tables it reads.
    pub view: Option<(Lineage, Vec<TableRef>)>,
    /// In `pg_catalog` or `information_schema`.
    pub system: bool,
    /// Carries values of user columns outside their tables: a statistics catalog, or a view
    /// that reads one.
    pub statistics: bool,
}

impl Relation {
    fn source(&self, column: &str) -> ColumnSource {
        ColumnSource {
            schema: self.schema.clone(),
            table: self.name.clone(),
            column: column.to_owned(),
        }
    }

    fn column_names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().flatten().map(String::as_str)
    }
}

/// One reading of the catalog.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub(super) by_oid: HashMap<u32, Arc<Relation>>,
    by_name: HashMap<String, Vec<Arc<Relation>>>,
    /// Every schema, relation and column name: identifiers an error message may show.
    names: std::collections::HashSet<String>,
    /// User-defined functions: by name, the schemas that have one, and whether it is volatile
    /// there.
    functions: HashMap<String, Vec<(String, bool)>>,
    /// The names of the functions of `pg_catalog` and `information_schema`.
    builtins: std::collections::HashSet<String>,
}

/// Views nest; a definition that refers back to itself through others stops here.
const MAX_VIEW_DEPTH: usize = 8;

impl Snapshot {
    pub fn from_rows(rows: CatalogRows) -> Snapshot {
        let mut building: Vec<(CatalogRow, Vec<Option<String>>, Option<String>)> = Vec::new();
        for row in rows.relations {
            match building.last_mut() {
                Some((first, columns, _)) if first.oid == row.oid => {
                    set_column(columns, row.attnum, row.column);
                }
                _ => {
                    let mut columns = Vec::new();
                    set_column(&mut columns, row.attnum, row.column.clone());
                    let definition = row.view_definition.clone();
                    building.push((row, columns, definition));
                }
            }
        }
        let mut snapshot = Snapshot::default();
        for (row, columns, definition) in building {
            let view = definition.and_then(|sql| {
                let analysed = crate::analysis::analyze_uncached(&sql).ok()?;
                let statement = analysed.first()?;
                Some((statement.lineage.clone(), statement.tables_read.clone()))
            });
            let system = SYSTEM_SCHEMAS.contains(&row.schema.as_str());
            let relation = Arc::new(Relation {
                oid: row.oid,
                statistics: system && STATISTICS.contains(&row.table.as_str()),
                system,
                schema: row.schema,
                name: row.table,
                columns,
                view,
            });
            if system {
                // Not names of the user's data: an error echoing one reveals nothing.
                snapshot
                    .by_name
                    .entry(relation.name.clone())
                    .or_default()
                    .push(relation.clone());
                snapshot.by_oid.insert(relation.oid, relation);
                continue;
            }
            snapshot.names.insert(relation.schema.clone());
            snapshot.names.insert(relation.name.clone());
            snapshot
                .names
                .extend(relation.column_names().map(str::to_owned));
            snapshot
                .by_name
                .entry(relation.name.clone())
                .or_default()
                .push(relation.clone());
            snapshot.by_oid.insert(relation.oid, relation);
        }
        snapshot.mark_statistics_views();
        for f in rows.functions {
            if SYSTEM_SCHEMAS.contains(&f.schema.as_str()) {
                snapshot.builtins.insert(f.name);
                continue;
            }
            snapshot
                .functions
                .entry(f.name)
                .or_default()
                .push((f.schema, f.volatile));
        }
        snapshot
    }

    /// Marks every user view that reads a statistics relation, directly or through other views.
    fn mark_statistics_views(&mut self) {
        for _ in 0..MAX_VIEW_DEPTH {
            let carrying: Vec<u32> = self
                .by_oid
                .values()
                .filter(|r| !r.statistics)
                .filter(|r| {
                    r.view.as_ref().is_some_and(|(_, tables)| {
                        self.tables(tables).iter().any(|t| t.statistics)
                            || tables.iter().any(|t| {
                                t.schema.as_deref().is_none_or(|s| s == "pg_catalog")
                                    && STATISTICS.contains(&t.name.as_str())
                            })
                    })
                })
                .map(|r| r.oid)
                .collect();
            if carrying.is_empty() {
                return;
            }
            for oid in carrying {
                if let Some(relation) = self.by_oid.get_mut(&oid) {
                    let mut marked = Relation::clone(relation);
                    marked.statistics = true;
                    let marked = Arc::new(marked);
                    for same in self.by_name.values_mut().flatten() {
                        if same.oid == oid {
                            *same = marked.clone();
                        }
                    }
                    *relation = marked;
                }
            }
        }
    }

    /// The user relations of `schema` (of every schema for `None`).
    pub fn schema_tables(&self, schema: Option<&str>) -> Vec<&Arc<Relation>> {
        self.by_oid
            .values()
            .filter(|r| !r.system && schema.is_none_or(|s| s == r.schema))
            .collect()
    }

    /// Whether `name` (as a statement calls it: `f` or `schema.f`) may be a user-defined
    /// function.
    pub fn user_function(&self, name: &str) -> bool {
        self.user_function_matches(name, |_| true)
    }

    /// Whether the catalog read knows `name` as some function, built-in or user-defined. A
    /// name it does not know is newer than the read (created in the same transaction, or since
    /// the last refresh), or names nothing: the caller assumes the worst.
    pub fn known_function(&self, name: &str) -> bool {
        self.user_function(name) || self.builtin_function(name)
    }

    /// What a statement calling `name` must assume: `None` for a built-in, `Some(volatile)` for
    /// a user-defined function, `Some(true)` for one the catalog read does not know.
    pub fn function_facts(&self, name: &str) -> Option<bool> {
        if self.user_function(name) {
            Some(self.volatile_user_function(name))
        } else if self.builtin_function(name) {
            None
        } else {
            Some(true)
        }
    }

    /// Whether `name` (bare, or qualified `pg_catalog.`/`information_schema.`) is a built-in.
    fn builtin_function(&self, name: &str) -> bool {
        match name.rsplit_once('.') {
            None => self.builtins.contains(name),
            Some((qualifier, bare)) => {
                let schema = qualifier.rsplit('.').next().unwrap_or(qualifier);
                SYSTEM_SCHEMAS
                    .iter()
                    .any(|s| schema.eq_ignore_ascii_case(s))
                    && self.builtins.contains(bare)
            }
        }
    }

    /// Whether `name` may be a user-defined function declared VOLATILE (in any overload).
    pub fn volatile_user_function(&self, name: &str) -> bool {
        self.user_function_matches(name, |volatile| volatile)
    }

    fn user_function_matches(&self, name: &str, volatile: impl Fn(bool) -> bool) -> bool {
        // A temporary function lives in the session's own pg_temp_N, which the catalog read
        // (another session, perhaps before it was committed) cannot match: any counts, as
        // user-defined and volatile.
        let temporary = |prefix: &str| {
            name.get(..prefix.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
        };
        if temporary("pg_temp.") || temporary("pg_temp_") {
            return true;
        }
        // The analysis joins name parts with dots, and a quoted name may hold dots itself
        // (`public."le.ak"`), a call may name the database (`app.public.leak`): every split
        // counts, and a bare name matches in any schema.
        if self
            .functions
            .get(name)
            .is_some_and(|found| found.iter().any(|(_, v)| volatile(*v)))
        {
            return true;
        }
        name.match_indices('.').any(|(at, _)| {
            let (qualifier, bare) = (&name[..at], &name[at + 1..]);
            self.functions.get(bare).is_some_and(|schemas| {
                schemas.iter().any(|(s, v)| {
                    volatile(*v) && (qualifier == s || qualifier.ends_with(&format!(".{s}")))
                })
            })
        })
    }

    pub fn relation(&self, oid: u32) -> Option<&Arc<Relation>> {
        self.by_oid.get(&oid)
    }

    /// Whether `name` is a schema, relation or column name of this database.
    pub fn knows_name(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// The relations `tables` may name: schema-qualified ones exactly, unqualified ones in
    /// any schema (the session's search_path is not known here, so every candidate counts).
    pub fn tables<'t>(
        &self,
        tables: impl IntoIterator<Item = &'t TableRef>,
    ) -> Vec<&Arc<Relation>> {
        let mut found: Vec<&Arc<Relation>> = Vec::new();
        for table in tables {
            for relation in self.by_name.get(&table.name).into_iter().flatten() {
                let schema_matches = table.schema.as_deref().is_none_or(|s| s == relation.schema);
                if schema_matches && !found.iter().any(|r| r.oid == relation.oid) {
                    found.push(relation);
                }
            }
        }
        found
    }

    /// The table column behind attribute `attnum` of relation `oid`, and for a view's column
    /// what its definition derives it from.
    pub fn column(&self, oid: u32, attnum: i16) -> Option<(ColumnSource, Vec<ColumnSource>)> {
        let relation = self.by_oid.get(&oid)?;
        let index = usize::try_from(attnum).ok()?.checked_sub(1)?;
        let name = relation.columns.get(index)?.as_deref()?;
        let mut derived = Vec::new();
        if let Some((lineage, tables)) = &relation.view {
            let refs = lineage.output(index, relation.columns.len());
            self.resolve(refs, &self.tables(tables), &mut derived, 1);
        }
        Some((relation.source(name), derived))
    }

    /// Adds to `out` every column of `tables` that `refs` may read: a name resolves to that
    /// column of every table that has it, a whole row (or a name no table has: a subquery's
    /// or alias's) to every column of every table. View columns bring what they derive from.
    pub fn resolve(
        &self,
        refs: &[Ref],
        tables: &[&Arc<Relation>],
        out: &mut Vec<ColumnSource>,
        depth: usize,
    ) {
        for reference in refs {
            let named = match reference {
                Ref::Column(name) => {
                    let having: Vec<_> = tables
                        .iter()
                        .filter(|t| t.column_names().any(|c| c == name))
                        .collect();
                    if having.is_empty() {
                        None
                    } else {
                        for table in having {
                            self.push(table, name, out, depth);
                        }
                        Some(())
                    }
                }
                Ref::WholeRow => None,
            };
            if named.is_none() {
                for table in tables {
                    for column in table.column_names() {
                        self.push(table, column, out, depth);
                    }
                }
            }
        }
    }

    fn push(&self, table: &Relation, column: &str, out: &mut Vec<ColumnSource>, depth: usize) {
        let known = out
            .iter()
            .any(|s| s.column == column && s.table == table.name && s.schema == table.schema);
        if known {
            return;
        }
        out.push(table.source(column));
        if let Some((lineage, tables)) = &table.view
            && depth < MAX_VIEW_DEPTH
        {
            let index = table
                .columns
                .iter()
                .position(|c| c.as_deref() == Some(column))
                .unwrap_or(0);
            let refs = lineage.output(index, table.columns.len());
            self.resolve(refs, &self.tables(tables), out, depth + 1);
        }
    }
}

fn set_column(columns: &mut Vec<Option<String>>, attnum: i16, name: String) {
    let Ok(index) = usize::try_from(attnum - 1) else {
        return;
    };
    if columns.len() <= index {
        columns.resize(index + 1, None);
    }
    columns[index] = Some(name);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        oid: u32,
        table: &str,
        kind: char,
        attnum: i16,
        column: &str,
        def: Option<&str>,
    ) -> CatalogRow {
        CatalogRow {
            oid,
            schema: if table.starts_with("pg_") {
                "pg_catalog".into()
            } else {
                "public".into()
            },
            table: table.into(),
            kind,
            attnum,
            column: column.into(),
            view_definition: def.map(str::to_owned),
        }
    }

    fn sample() -> Snapshot {
        Snapshot::from_rows(CatalogRows {
            relations: vec![
                row(10, "customers", 'r', 1, "id", None),
                row(10, "customers", 'r', 2, "email", None),
                row(10, "customers", 'r', 4, "name", None),
                row(
                    20,
                    "contacts",
                    'v',
                    1,
                    "who",
                    Some(
                        " SELECT customers.name AS who, upper(customers.email) AS mail FROM customers;",
                    ),
                ),
                row(20, "contacts", 'v', 2, "mail", None),
                row(30, "pg_class", 'r', 1, "oid", None),
                row(30, "pg_class", 'r', 2, "relname", None),
                row(40, "pg_stats", 'v', 1, "most_common_vals", None),
                row(
                    50,
                    "stats_of_mine",
                    'v',
                    1,
                    "most_common_vals",
                    Some(" SELECT most_common_vals FROM pg_stats;"),
                ),
                row(
                    60,
                    "stats_again",
                    'v',
                    1,
                    "most_common_vals",
                    Some(" SELECT most_common_vals FROM stats_of_mine;"),
                ),
            ],
            functions: vec![
                CatalogFunction {
                    schema: "public".into(),
                    name: "leak".into(),
                    volatile: true,
                },
                CatalogFunction {
                    schema: "pg_catalog".into(),
                    name: "upper".into(),
                    volatile: false,
                },
            ],
        })
    }

    fn names(sources: &[ColumnSource]) -> Vec<String> {
        sources
            .iter()
            .map(|s| format!("{}.{}", s.table, s.column))
            .collect()
    }

    #[test]
    fn columns_resolve_by_attribute_number_across_dropped_ones() {
        let s = sample();
        let (source, derived) = s.column(10, 4).unwrap();
        assert_eq!(source.column, "name");
        assert!(derived.is_empty());
        assert!(s.column(10, 3).is_none(), "dropped");
        assert!(s.column(99, 1).is_none());
    }

    #[test]
    fn view_columns_carry_what_their_definition_reads() {
        let s = sample();
        let (source, derived) = s.column(20, 2).unwrap();
        assert_eq!(source.table, "contacts");
        assert_eq!(names(&derived), ["customers.email"]);
    }

    #[test]
    fn system_catalogs_are_relations_and_statistics_are_marked_through_views() {
        let s = sample();
        let (source, derived) = s.column(30, 2).unwrap();
        assert_eq!(
            (source.schema.as_str(), source.table.as_str()),
            ("pg_catalog", "pg_class")
        );
        assert!(derived.is_empty());
        assert!(!s.relation(30).unwrap().statistics);
        for oid in [40, 50, 60] {
            assert!(s.relation(oid).unwrap().statistics, "{oid}");
        }
        assert!(!s.knows_name("pg_class"), "system names are not the user's");
    }

    #[test]
    fn a_function_the_catalog_read_does_not_know_is_unknown() {
        let s = sample();
        for known in ["upper", "pg_catalog.upper", "leak", "public.leak"] {
            assert!(s.known_function(known), "{known}");
        }
        assert!(!s.user_function("upper"), "a built-in");
        for unknown in ["created_since", "public.upper", "other.leak"] {
            assert!(!s.known_function(unknown), "{unknown}");
        }
    }

    #[test]
    fn user_functions_are_known_by_name_and_schema() {
        let s = sample();
        assert!(s.user_function("leak"));
        assert!(s.user_function("public.leak"));
        assert!(!s.user_function("other.leak"));
        assert!(!s.user_function("upper"));
        assert!(
            s.user_function("app.public.leak"),
            "named with its database"
        );
        assert!(s.volatile_user_function("public.leak"));
        // Temporary functions are never in the catalog read: every one counts.
        assert!(s.volatile_user_function("pg_temp.purge"));
        assert!(s.volatile_user_function("PG_TEMP_3.purge"));
    }

    #[test]
    fn unknown_names_and_whole_rows_resolve_to_every_column() {
        let s = sample();
        let tables = s.tables(&[TableRef {
            schema: None,
            name: "customers".into(),
        }]);
        let mut out = Vec::new();
        s.resolve(&[Ref::Column("email".into())], &tables, &mut out, 0);
        assert_eq!(names(&out), ["customers.email"]);
        let mut out = Vec::new();
        s.resolve(&[Ref::Column("x".into())], &tables, &mut out, 0);
        assert_eq!(
            names(&out),
            ["customers.id", "customers.email", "customers.name"]
        );
        let other_schema = s.tables(&[TableRef {
            schema: Some("billing".into()),
            name: "customers".into(),
        }]);
        assert!(other_schema.is_empty());
    }
}
