//! Table patterns for plugin configuration: `billing.invoices`, `billing.*`, `*.audit_log`,
//! `invoices`, `*`. Names compare as Postgres folds unquoted identifiers (case-insensitively).

use crate::TableRef;

/// A pattern naming tables, as written in a plugin's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePattern {
    /// `None`: any schema (a pattern without a dot, or `*.`).
    schema: Option<String>,
    /// `None`: any table (`*`).
    table: Option<String>,
}

impl TablePattern {
    /// Parses `schema.table`, `table`, with `*` for either part. Errors name what is wrong.
    pub fn parse(text: &str) -> Result<TablePattern, String> {
        let text = text.trim();
        let part = |p: &str| -> Result<Option<String>, String> {
            let p = p.trim();
            match p {
                "" => Err(format!("table pattern \"{text}\" has an empty part")),
                "*" => Ok(None),
                _ if p.contains('*') => Err(format!(
                    "table pattern \"{text}\": `*` stands for a whole schema or table name"
                )),
                _ => Ok(Some(p.to_ascii_lowercase())),
            }
        };
        match text.split_once('.') {
            Some((schema, table)) => Ok(TablePattern {
                schema: part(schema)?,
                table: part(table)?,
            }),
            None => Ok(TablePattern {
                schema: None,
                table: part(text)?,
            }),
        }
    }

    /// A comma-separated list of patterns.
    pub fn parse_list(text: &str) -> Result<Vec<TablePattern>, String> {
        text.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(TablePattern::parse)
            .collect()
    }

    /// Whether `table` matches. A table the statement did not qualify with a schema is looked
    /// for in each of `search_path` (the schemas it may resolve to).
    pub fn matches(&self, table: &TableRef, search_path: &[String]) -> bool {
        let name_matches = self
            .table
            .as_deref()
            .is_none_or(|t| t.eq_ignore_ascii_case(&table.name));
        if !name_matches {
            return false;
        }
        let Some(schema) = &self.schema else {
            return true;
        };
        match &table.schema {
            Some(s) => s.eq_ignore_ascii_case(schema),
            None => search_path.iter().any(|s| s.eq_ignore_ascii_case(schema)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(schema: Option<&str>, name: &str) -> TableRef {
        TableRef {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    #[test]
    fn patterns_match_schemas_and_tables_with_wildcards_and_folded_case() {
        let path = vec!["public".to_owned()];
        let billing = TablePattern::parse("billing.*").unwrap();
        assert!(billing.matches(&table(Some("billing"), "invoices"), &path));
        assert!(billing.matches(&table(Some("BILLING"), "x"), &path));
        assert!(!billing.matches(&table(Some("public"), "invoices"), &path));
        let any_audit = TablePattern::parse("*.Audit_Log").unwrap();
        assert!(any_audit.matches(&table(Some("ops"), "audit_log"), &path));
        assert!(any_audit.matches(&table(None, "audit_log"), &path));
        let bare = TablePattern::parse("invoices").unwrap();
        assert!(bare.matches(&table(Some("billing"), "invoices"), &path));
        assert!(!bare.matches(&table(None, "orders"), &path));
        assert!(
            TablePattern::parse("*")
                .unwrap()
                .matches(&table(None, "t"), &path)
        );
    }

    #[test]
    fn an_unqualified_table_matches_a_schema_on_the_search_path_only() {
        let pattern = TablePattern::parse("public.orders").unwrap();
        let orders = table(None, "orders");
        assert!(pattern.matches(&orders, &["public".into()]));
        assert!(!pattern.matches(&orders, &["app".into()]));
        assert!(pattern.matches(&orders, &["app".into(), "public".into()]));
    }

    #[test]
    fn malformed_patterns_are_refused_with_the_reason() {
        assert!(
            TablePattern::parse("bill*.x")
                .unwrap_err()
                .contains("whole")
        );
        assert!(
            TablePattern::parse("billing.")
                .unwrap_err()
                .contains("empty")
        );
        assert_eq!(TablePattern::parse_list("a, b.*,").unwrap().len(), 2);
    }
}
