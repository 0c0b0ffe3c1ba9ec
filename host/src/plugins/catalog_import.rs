//! The contract's `catalog` import (since 0.1.1): what the database's catalog declares about
//! the functions of the statements a call is about. The gateway reads the catalog before it
//! judges a statement (whether a function is user-defined and volatile decides `writes`);
//! each call that has those facts hands them to the plugin's store, and the import
//! (`state.rs`) answers from there, without a database round trip inside a plugin call.

use crate::analysis::{FunctionFacts, Statement};

use super::bindings::v0_1::sluice::plugin::catalog::FunctionInfo;

/// The catalog's answers for the functions of one call's statements.
#[derive(Debug, Clone, Default)]
pub struct CallCatalog {
    /// Every function the statements call, as the analysis lists them.
    listed: Vec<String>,
    /// The user-defined ones among them.
    user: Vec<FunctionFacts>,
}

impl CallCatalog {
    /// The answers for `statements`, whose catalog facts the gateway has read.
    pub fn of<'a>(statements: impl IntoIterator<Item = &'a Statement>) -> CallCatalog {
        let mut catalog = CallCatalog::default();
        for statement in statements {
            catalog.listed.extend(statement.functions.iter().cloned());
            catalog
                .user
                .extend(statement.user_functions.iter().cloned());
        }
        catalog
    }

    pub(super) fn info(&self, name: &str) -> Option<FunctionInfo> {
        if !self.listed.iter().any(|f| f == name) {
            return None;
        }
        Some(match self.user.iter().find(|f| f.name == name) {
            Some(found) => FunctionInfo {
                user_defined: true,
                volatile: found.volatile,
            },
            None => FunctionInfo {
                user_defined: false,
                volatile: false,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_functions_are_answered_and_others_are_not() {
        let mut statements = crate::analysis::analyze_uncached("SELECT purge(1), lower('A')")
            .unwrap()
            .to_vec();
        std::sync::Arc::make_mut(&mut statements[0].facts).user_functions = vec![FunctionFacts {
            name: "purge".into(),
            volatile: true,
        }];
        let catalog = CallCatalog::of(&statements);
        let purge = catalog.info("purge").unwrap();
        assert!(purge.user_defined && purge.volatile);
        let lower = catalog.info("lower").unwrap();
        assert!(!lower.user_defined && !lower.volatile);
        assert!(
            catalog.info("pg_sleep").is_none(),
            "not called by the statement"
        );
    }
}
