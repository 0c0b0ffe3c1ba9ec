//! Code the gateway cannot see into — a DO block, CALL, a user-defined function — can change
//! how Postgres reads the statements after it (`standard_conforming_strings`,
//! `client_encoding` set inside a function body). Postgres reports such a change only with its
//! next ReadyForQuery, which the session checks (`reading.rs`): so no statement may be parsed
//! upstream between opaque code and that report.
//!
//! - A simple Query is parsed whole before any of it runs: opaque code in it changes nothing
//!   for the rest of the string.
//! - In the extended protocol every Parse is read when Postgres reaches it: a Parse after an
//!   Execute of opaque code in the same request cycle is refused (ask the client for a Sync).
//! - Across request cycles, a message after a cycle that ran opaque code waits until that
//!   cycle's answer has been relayed (and with it any ParameterStatus).

use std::collections::HashMap;

use crate::wire::frontend::pg_name;

#[derive(Debug, Default)]
pub struct OpaqueCode {
    /// Named statements (and the unnamed one, "") whose text runs opaque code.
    statements: HashMap<String, bool>,
    /// Portals, by the statement they were bound from.
    portals: HashMap<String, bool>,
    /// Opaque code was executed in the request cycle the client is sending.
    in_cycle: bool,
    /// The request cycle whose answer must be relayed before anything after it goes upstream.
    barrier: Option<u64>,
}

impl OpaqueCode {
    /// A Parse of `name` whose statement runs opaque code (`opaque`) went upstream.
    pub fn parsed(&mut self, name: &str, opaque: bool) {
        self.statements.insert(pg_name(name).to_owned(), opaque);
    }

    /// A Bind of `portal` from `statement` went upstream.
    pub fn bound(&mut self, portal: &str, statement: &str) {
        let opaque = self
            .statements
            .get(pg_name(statement))
            .copied()
            .unwrap_or(false);
        self.portals.insert(pg_name(portal).to_owned(), opaque);
    }

    /// An Execute of `portal` went upstream.
    pub fn executed(&mut self, portal: &str) {
        if self.portals.get(pg_name(portal)).copied().unwrap_or(false) {
            self.in_cycle = true;
        }
    }

    /// A Query running opaque code (`opaque`) went upstream.
    pub fn queried(&mut self, opaque: bool) {
        self.in_cycle |= opaque;
    }

    /// Whether a Parse now would be read after opaque code, in the same request cycle.
    pub fn parse_refused(&self) -> bool {
        self.in_cycle
    }

    /// The request cycle numbered `cycle` was closed (Query, Sync).
    pub fn cycle_closed(&mut self, cycle: u64) {
        if std::mem::take(&mut self.in_cycle) {
            self.barrier = Some(cycle);
        }
    }

    /// The cycle whose answer must be relayed first, while `answered` cycles have been.
    pub fn waiting_for(&mut self, answered: u64) -> Option<u64> {
        match self.barrier {
            Some(cycle) if answered <= cycle => Some(cycle),
            _ => {
                self.barrier = None;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parse_after_opaque_code_in_the_same_cycle_is_refused_and_the_next_cycle_waits() {
        let mut opaque = OpaqueCode::default();
        opaque.parsed("", false);
        opaque.bound("", "");
        opaque.executed("");
        assert!(!opaque.parse_refused(), "plain statements pipeline freely");
        opaque.parsed("f", true);
        opaque.bound("p", "f");
        assert!(!opaque.parse_refused(), "bound is not run");
        opaque.executed("p");
        assert!(opaque.parse_refused());
        opaque.cycle_closed(7);
        assert!(!opaque.parse_refused());
        assert_eq!(opaque.waiting_for(7), Some(7), "cycle 7 not answered yet");
        assert_eq!(opaque.waiting_for(8), None);
        assert_eq!(opaque.waiting_for(8), None);
    }

    #[test]
    fn a_query_with_opaque_code_holds_the_next_cycle() {
        let mut opaque = OpaqueCode::default();
        opaque.queried(true);
        opaque.cycle_closed(0);
        assert_eq!(opaque.waiting_for(0), Some(0));
        opaque.queried(false);
        opaque.cycle_closed(1);
        assert_eq!(opaque.waiting_for(1), None);
    }
}
