//! What the names in a statement mean depends on session settings: `search_path` decides which
//! schema `customers` or `lower()` is, the role (`SET ROLE`, `SET SESSION AUTHORIZATION`) whose
//! privileges and defaults apply. A held statement is approved as the approvers read it, so
//! they see every statement of the session that changed those settings before it, and a
//! scoped grant covers a later statement only where they were changed the same way
//! (`approvals::Scope` keys on these lines).
//!
//! - Changes count when they go upstream, whether or not Postgres then accepts them: a change
//!   that failed only makes a grant narrower. A statement prepared in the extended protocol
//!   counts at each Execute, as every definition its name may have then (the named-statement
//!   registry and the unnamed statement's candidates keep what each definition changes).
//! - Where the text does not say what is set, the session gets a fresh marker, so no grant
//!   made before it, or in another session, covers what follows: code the gateway cannot see
//!   into (a DO block, CALL, any user-defined function), `set_config` with an argument that is
//!   not a constant, a write to `pg_settings` (its rule calls `set_config`), a cursor declared
//!   over a change (it runs at each FETCH).
//! - Nothing is taken back (`RESET`, the end of a `SET LOCAL`'s transaction): the lines only
//!   grow, and so only narrow what a grant covers.

use crate::analysis::{Statement, Wrapper};

use crate::wire::frontend::pg_name;

/// Settings that change what a name means; `*` is `RESET ALL`, `DISCARD ALL`, or a
/// `set_config` whose name is not a constant.
const NAME_SETTINGS: &[&str] = &["search_path", "role", "session_authorization", "*"];

/// Lines kept for approvers; past this, the session is marked instead.
const MAX_LINES: usize = 32;

/// What running one statement text does to the settings names depend on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// The statements (as sent) that change them.
    texts: Vec<String>,
    /// What it changes cannot be told from the text.
    unseen: bool,
    /// It declares a cursor over a change: each FETCH or MOVE runs it.
    declares: bool,
    /// It uses a cursor (FETCH, MOVE, CLOSE).
    fetches: bool,
}

impl Change {
    /// The change made by running `statements` (as they execute: an `EXECUTE` resolved to
    /// what it runs), `opaque` if they run code the gateway cannot see into.
    pub fn of(statements: &[Statement], opaque: bool) -> Change {
        let mut unseen = opaque;
        let mut declares = false;
        let mut texts = Vec::new();
        let fetches = statements
            .iter()
            .any(|s| s.kind == crate::analysis::StatementKind::Cursor);
        for s in statements {
            let changes: Vec<_> = s
                .settings
                .iter()
                .filter(|c| NAME_SETTINGS.contains(&c.name.as_str()))
                .collect();
            unseen |= changes.iter().any(|c| c.at_run_time)
                || s.tables_written.iter().any(|t| t.is_settings_view());
            declares |= !changes.is_empty() && s.wrapper == Some(Wrapper::DeclareCursor);
            if !changes.is_empty() {
                texts.push(s.text.trim().to_owned());
            }
        }
        Change {
            texts,
            unseen: unseen || declares,
            declares,
            fetches,
        }
    }

    /// Both changes: what a name with two possible definitions may do.
    pub fn union(&self, other: &Change) -> Change {
        if other.is_empty() {
            return self.clone();
        }
        if self.is_empty() {
            return other.clone();
        }
        Change {
            texts: self
                .texts
                .iter()
                .chain(other.texts.iter())
                .cloned()
                .collect(),
            unseen: self.unseen || other.unseen,
            declares: self.declares || other.declares,
            fetches: self.fetches || other.fetches,
        }
    }

    fn is_empty(&self) -> bool {
        self.texts.is_empty() && !self.unseen && !self.fetches
    }
}

#[derive(Debug, Default)]
pub struct NameContext {
    /// Portals, by what running them changes.
    portals: std::collections::HashMap<String, Change>,
    /// The changing statements that went upstream, in order.
    lines: Vec<String>,
    /// Set afresh each time something changes them unseen (or the lines overflow).
    marker: Option<String>,
    /// A cursor declared over a change: every use of a cursor may run it.
    cursor_changes: bool,
}

impl NameContext {
    /// A Bind of `portal` went upstream; running it makes `change`.
    pub fn bound(&mut self, portal: &str, change: Change) {
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
        self.cursor_changes |= change.declares;
        if change.unseen || (change.fetches && self.cursor_changes) {
            self.mark();
        }
    }

    fn mark(&mut self) {
        let fresh: [u8; 6] = rand::random();
        self.marker = Some(fresh.iter().map(|b| format!("{b:02x}")).collect());
    }

    /// What approvers are shown, and what a scoped grant is keyed on: the statements that
    /// changed the settings, then a line for changes the gateway could not read, if any.
    /// Empty while the session runs with its defaults.
    pub fn shown(&self) -> Vec<String> {
        let mut shown = self.lines.clone();
        if let Some(marker) = &self.marker {
            shown.push(format!(
                "-- search_path and the role may have been changed where the gateway cannot read it (a DO block, CALL or user-defined function, set_config of computed values, pg_settings, a cursor), or more than {MAX_LINES} times [session mark {marker}]"
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

    fn marked(names: &NameContext) -> bool {
        names
            .shown()
            .last()
            .is_some_and(|l| l.contains("session mark"))
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
        assert!(!marked(&names), "every one of them says what it sets");
    }

    #[test]
    fn a_prepared_change_counts_at_each_execution() {
        let mut names = NameContext::default();
        names.bound("p", change("SET search_path = evil", false));
        assert!(names.shown().is_empty(), "bound, not run");
        names.executed("p");
        names.executed("p");
        assert_eq!(
            names.shown(),
            ["SET search_path = evil", "SET search_path = evil"]
        );
        names.bound("p", change("SELECT 1", false));
        names.executed("p");
        assert_eq!(
            names.shown().len(),
            2,
            "the portal now runs a plain statement"
        );
    }

    #[test]
    fn what_the_text_does_not_say_marks_the_session_afresh_each_time() {
        for sql in [
            "SELECT set_config('search_path', $1, false)",
            "SELECT set_config(current_setting('app.name'), 'evil', false)",
            "UPDATE pg_settings SET setting = 'evil' WHERE name = 'search_path'",
            "DECLARE c CURSOR FOR SELECT set_config('search_path', 'evil', false)",
        ] {
            let mut names = NameContext::default();
            names.queried(&change(sql, false));
            assert!(marked(&names), "{sql}");
            let first = names.shown();
            names.queried(&change(sql, false));
            assert_ne!(names.shown(), first, "{sql}");
        }
        let mut names = NameContext::default();
        names.queried(&change("SELECT 1", true));
        assert!(marked(&names), "opaque code");

        let mut names = NameContext::default();
        names.queried(&change("FETCH 1 FROM c", false));
        assert!(!marked(&names), "no cursor changes anything");
        names.queried(&change(
            "DECLARE c CURSOR FOR SELECT set_config('search_path', 'evil', false)",
            false,
        ));
        let declared = names.shown();
        names.queried(&change("FETCH 1 FROM c", false));
        assert_ne!(names.shown(), declared, "each FETCH may change them again");
    }

    #[test]
    fn a_name_with_two_possible_definitions_makes_both_changes() {
        let both = change("SET search_path = a", false).union(&change("SELECT 1", true));
        let mut names = NameContext::default();
        names.bound("", both);
        names.executed("");
        assert_eq!(names.shown()[0], "SET search_path = a");
        assert!(marked(&names));
    }

    #[test]
    fn too_many_changes_mark_the_session() {
        let mut names = NameContext::default();
        for _ in 0..=MAX_LINES {
            names.queried(&change("SET search_path = a", false));
        }
        let shown = names.shown();
        assert_eq!(shown.len(), MAX_LINES + 1);
        assert!(marked(&names));
    }
}
