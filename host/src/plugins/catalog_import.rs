//! The contract's `catalog` import (since 0.1.1): what the database's catalog declares about
//! the functions of the statements a call is about. The gateway reads the catalog before it
//! judges a statement (whether a function is user-defined and volatile decides `writes`);
//! each call that has those facts hands them to the plugin's store, and the import
//! (`state.rs`) answers from there, without a database round trip inside a plugin call.

use std::sync::Arc;

use crate::analysis::{FunctionFacts, Statement};

use super::bindings::v0_1::sluice::plugin::catalog::FunctionInfo;

/// The catalog's answers for the functions of one call's statements. Built once per statement
/// and handed to each plugin's call by reference count (nothing for a statement without
/// functions, the common case).
#[derive(Debug, Clone, Default)]
pub struct CallCatalog(Option<Arc<Answers>>);

#[derive(Debug)]
struct Answers {
    /// Every function the statements call, as the analysis lists them.
    listed: Vec<String>,
    /// The user-defined ones among them.
    user: Vec<FunctionFacts>,
}

impl CallCatalog {
    /// The answers for `statements`, whose catalog facts the gateway has read.
    pub fn of<'a>(statements: impl IntoIterator<Item = &'a Statement>) -> CallCatalog {
        let mut listed = Vec::new();
        let mut user = Vec::new();
        for statement in statements {
            listed.extend(statement.functions.iter().cloned());
            user.extend(statement.user_functions.iter().cloned());
        }
        CallCatalog((!listed.is_empty()).then(|| Arc::new(Answers { listed, user })))
    }

    pub(super) fn info(&self, name: &str) -> Option<FunctionInfo> {
        let answers = self.0.as_ref()?;
        if !answers.listed.iter().any(|f| f == name) {
            return None;
        }
        let user = answers.user.iter().find(|f| f.name == name);
        Some(FunctionInfo {
            user_defined: user.is_some(),
            volatile: user.is_some_and(|f| f.volatile),
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
        Arc::make_mut(&mut statements[0].facts).user_functions = vec![FunctionFacts {
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
