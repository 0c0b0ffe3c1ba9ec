//! What the names in a statement mean depends on session settings: `search_path` decides which
//! schema `customers` or `lower()` is, the role (`SET ROLE`, `SET SESSION AUTHORIZATION`) whose
//! privileges and defaults apply. A held statement is approved as the approvers read it, so
//! they see every statement of the session that changed those settings before it, and a
//! scoped grant covers a later statement only where they were changed the same way
//! (`approvals::Scope` keys on these lines).
//!
//! - Changes count when they go upstream, whether or not Postgres then accepts them: a change
//!   that failed only makes a grant narrower. A statement prepared in the extended protocol
//!   counts at each Execute of a portal bound from it.
//! - Code the gateway cannot see into (a DO block, CALL, any user-defined function) may change
//!   them with `set_config`: each run gives the session a fresh marker, so no grant made
//!   before it, or in another session, covers what follows.
//! - Nothing is taken back (`RESET`, the end of a `SET LOCAL`'s transaction): the lines only
//!   grow, and so only narrow what a grant covers.

use std::collections::HashMap;
use std::sync::Arc;

use crate::analysis::Statement;

use super::prepared::pg_name;

/// Settings that change what a name means; `*` is `RESET ALL`, `DISCARD ALL`, or a
/// `set_config` whose name is not a constant.
const NAME_SETTINGS: &[&str] = &["search_path", "role", "session_authorization", "*"];

/// Lines kept for approvers; past this, the session is marked as after opaque code.
const MAX_LINES: usize = 32;

/// What running one statement text does to the settings names depend on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// The statements (as sent) that change them.
    texts: Arc<[String]>,
    /// The text runs code the gateway cannot see into.
    opaque: bool,
}

impl Change {
    /// The change made by running `statements` (as they execute: an `EXECUTE` resolved to
    /// what it runs), `opaque` if they run code the gateway cannot see into.
    pub fn of(statements: &[Statement], opaque: bool) -> Change {
        Change {
            texts: statements
                .iter()
                .filter(|s| {
                    s.settings
                        .iter()
                        .any(|c| NAME_SETTINGS.contains(&c.name.as_str()))
                })
                .map(|s| s.text.trim().to_owned())
                .collect(),
            opaque,
        }
    }

    fn is_empty(&self) -> bool {
        self.texts.is_empty() && !self.opaque
    }
}

#[derive(Debug, Default)]
pub struct NameContext {
    /// Named statements (and the unnamed one, "") that change the settings.
    statements: HashMap<String, Change>,
    /// Portals, by the statement they were bound from.
    portals: HashMap<String, Change>,
    /// The changing statements that went upstream, in order.
    lines: Vec<String>,
    /// Set afresh each time code the gateway cannot see into runs (or the lines overflow).
    marker: Option<String>,
}

impl NameContext {
    /// A Parse of `name` whose text makes `change` went upstream (nothing runs yet).
    pub fn parsed(&mut self, name: &str, change: Change) {
        let name = pg_name(name).to_owned();
        if change.is_empty() {
            self.statements.remove(&name);
        } else {
            self.statements.insert(name, change);
        }
    }

    /// A Bind of `portal` from `statement` went upstream.
    pub fn bound(&mut self, portal: &str, statement: &str) {
        let portal = pg_name(portal).to_owned();
        match self.statements.get(pg_name(statement)) {
            Some(change) => {
                self.portals.insert(portal, change.clone());
            }
            None => {
                self.portals.remove(&portal);
            }
        }
    }

    /// A Bind of `portal` went upstream, judged at the Bind as making `change`.
    pub fn bound_as(&mut self, portal: &str, change: Change) {
        let portal = pg_name(portal).to_owned();
        if change.is_empty() {
            self.portals.remove(&portal);
        } else {
            self.portals.insert(portal, change);
        }
    }

    /// An Execute of `portal` went upstream.
    pub fn executed(&mut self, portal: &str) {
        if let Some(change) = self.portals.get(pg_name(portal)).cloned() {
            self.ran(&change);
        }
    }

    /// A Query making `change` went upstream.
    pub fn queried(&mut self, change: &Change) {
        self.ran(change);
    }

    fn ran(&mut self, change: &Change) {
        for text in change.texts.iter() {
            if self.lines.len() < MAX_LINES {
                self.lines.push(text.clone());
            } else {
                self.mark();
            }
        }
        if change.opaque {
            self.mark();
        }
    }

    fn mark(&mut self) {
        let fresh: [u8; 6] = rand::random();
        self.marker = Some(fresh.iter().map(|b| format!("{b:02x}")).collect());
    }

    /// What approvers are shown, and what a scoped grant is keyed on: the statements that
    /// changed the settings, then a line for code the gateway could not see into, if any ran.
    /// Empty while the session runs with its defaults.
    pub fn shown(&self) -> Vec<String> {
        let mut shown = self.lines.clone();
        if let Some(marker) = &self.marker {
            shown.push(format!(
                "-- code the gateway cannot see into ran (a DO block, CALL or user-defined function), or more than {MAX_LINES} changes did: search_path and the role may differ [session mark {marker}]"
            ));
        }
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(sql: &str, opaque: bool) -> Change {
        let statements = crate::analysis::analyze_uncached(sql).unwrap();
        Change::of(&statements, opaque)
    }

    #[test]
    fn only_statements_changing_search_path_or_the_role_are_shown() {
        let mut names = NameContext::default();
        names.queried(&change(
            "SET search_path = app, public; SELECT 1; SET ROLE reporting; SET work_mem = '64MB'",
            false,
        ));
        assert_eq!(
            names.shown(),
            ["SET search_path = app, public", "SET ROLE reporting"]
        );
        names.queried(&change(
            "SELECT set_config('search_path', 'x', false)",
            false,
        ));
        names.queried(&change("RESET ALL", false));
        assert_eq!(names.shown().len(), 4);
    }

    #[test]
    fn a_prepared_change_counts_at_each_execution_not_at_parse() {
        let mut names = NameContext::default();
        names.parsed("s", change("SET search_path = evil", false));
        names.bound("p", "s");
        assert!(names.shown().is_empty(), "parsed and bound, not run");
        names.executed("p");
        names.executed("p");
        assert_eq!(
            names.shown(),
            ["SET search_path = evil", "SET search_path = evil"]
        );
        names.parsed("s", change("SELECT 1", false));
        names.bound("p", "s");
        names.executed("p");
        assert_eq!(
            names.shown().len(),
            2,
            "the name now means a plain statement"
        );
    }

    #[test]
    fn each_run_of_opaque_code_marks_the_session_afresh() {
        let mut names = NameContext::default();
        names.queried(&change("SELECT 1", true));
        let first = names.shown();
        assert_eq!(first.len(), 1);
        assert!(first[0].contains("cannot see into"), "{first:?}");
        names.queried(&change("SELECT 2", true));
        assert_ne!(names.shown(), first);
    }

    #[test]
    fn too_many_changes_mark_the_session() {
        let mut names = NameContext::default();
        for _ in 0..=MAX_LINES {
            names.queried(&change("SET search_path = a", false));
        }
        let shown = names.shown();
        assert_eq!(shown.len(), MAX_LINES + 1);
        assert!(shown[MAX_LINES].contains("session mark"));
    }
}
