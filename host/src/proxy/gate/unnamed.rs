//! The unnamed statement, as far as the gateway can know it. Postgres keeps the unnamed
//! statement after Sync, so a later Bind of "" runs it again; and a Parse of "" replaces it
//! only if it runs: in a request cycle where an earlier message failed, Postgres skips to Sync
//! and keeps the old one. So the gateway keeps every definition Postgres may hold, with the
//! request cycle that parsed it, and drops the older ones only once a cycle that parsed a new
//! one is answered without an error.

use super::name_context::Change;
use super::prepared::Judged;

/// Definitions kept while their cycles are unanswered or failed; past it every Bind of "" that
/// needs judging is refused until a clean cycle settles them.
const MAX_CANDIDATES: usize = 64;

/// One Parse of "" the gateway forwarded.
#[derive(Debug, Clone)]
pub struct Unnamed {
    /// Its text (`None` if not UTF-8).
    pub sql: Option<String>,
    pub judged: Judged,
    /// Its text is a COPY FROM STDIN.
    pub copy_in: bool,
    /// What running it does to the settings names depend on.
    pub names: Change,
}

/// What a Bind of "" runs, as far as the gateway knows.
#[derive(Debug)]
pub enum Runs<'a> {
    /// No Parse of "" was ever forwarded: Postgres fails the Bind.
    Nothing,
    /// This definition (the Bind's own cycle parsed it, or answers settled it).
    One(&'a Unnamed),
    /// Several definitions may be the one: an earlier cycle failed where it cannot be told
    /// whether its Parse ran.
    Ambiguous(Vec<&'a Unnamed>),
}

/// A definition with the request cycle that parsed it and, once answered, whether that cycle
/// failed.
#[derive(Debug)]
struct Candidate {
    cycle: u64,
    failed: Option<bool>,
    unnamed: Unnamed,
}

#[derive(Debug, Default)]
pub struct UnnamedStatements {
    /// Oldest first.
    candidates: Vec<Candidate>,
}

impl UnnamedStatements {
    /// A Parse of "" went upstream in request cycle `cycle`.
    pub fn parsed(&mut self, cycle: u64, unnamed: Unnamed) {
        self.candidates.push(Candidate {
            cycle,
            failed: None,
            unnamed,
        });
    }

    /// Whether some definition waits for its cycle's answer.
    pub fn has_pending(&self) -> bool {
        self.candidates.iter().any(|c| c.failed.is_none())
    }

    /// The newest cycle that parsed a definition whose answer has not come.
    pub fn unanswered(&self) -> Option<u64> {
        self.candidates
            .iter()
            .filter(|c| c.failed.is_none())
            .map(|c| c.cycle)
            .max()
    }

    /// Applies the answers of the first `answered` request cycles (`failed` tells which
    /// failed; asked once per cycle): the last definition of the newest cycle answered without
    /// an error is the one Postgres holds.
    pub fn settle(&mut self, answered: u64, failed: impl Fn(u64) -> bool) {
        for candidate in &mut self.candidates {
            if candidate.failed.is_none() && candidate.cycle < answered {
                candidate.failed = Some(failed(candidate.cycle));
            }
        }
        let clean = self
            .candidates
            .iter()
            .rposition(|c| c.failed == Some(false));
        if let Some(at) = clean {
            let cycle = self.candidates[at].cycle;
            // The last definition of that cycle ran: it replaced everything before it.
            let last = self
                .candidates
                .iter()
                .rposition(|c| c.cycle == cycle)
                .unwrap_or(at);
            self.candidates.drain(..last);
        }
    }

    /// What a Bind of "" in request cycle `cycle` runs. A definition parsed earlier in the
    /// same cycle is the one if the Bind runs at all (had its Parse been skipped by an error,
    /// so would the Bind).
    pub fn runs(&self, cycle: u64) -> Runs<'_> {
        let all = || Runs::Ambiguous(self.candidates.iter().map(|c| &c.unnamed).collect());
        if self.candidates.len() > MAX_CANDIDATES {
            return all();
        }
        let newest_here = self.candidates.last().is_some_and(|c| c.cycle == cycle);
        match self.candidates.len() {
            0 => Runs::Nothing,
            1 => Runs::One(&self.candidates[0].unnamed),
            _ if newest_here => Runs::One(&self.candidates[self.candidates.len() - 1].unnamed),
            _ => all(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unnamed(sql: &str, held: bool) -> Unnamed {
        Unnamed {
            sql: Some(sql.into()),
            judged: Judged {
                generation: 1,
                held,
            },
            copy_in: false,
            names: Change::default(),
        }
    }

    fn text(bound: Runs<'_>) -> String {
        match bound {
            Runs::One(u) => u.sql.clone().unwrap(),
            Runs::Nothing => "nothing".into(),
            Runs::Ambiguous(all) => format!("{} candidates", all.len()),
        }
    }

    #[test]
    fn a_parse_replaces_the_unnamed_statement_only_once_its_cycle_is_answered_cleanly() {
        let mut statements = UnnamedStatements::default();
        assert_eq!(text(statements.runs(0)), "nothing");
        statements.parsed(0, unnamed("DELETE FROM t", true));
        statements.settle(1, |_| false);
        // Cycle 1 failed: its Parse may have been skipped.
        statements.parsed(1, unnamed("SELECT 1", false));
        assert_eq!(text(statements.runs(1)), "SELECT 1", "within its own cycle");
        statements.settle(2, |c| c == 1);
        assert_eq!(text(statements.runs(2)), "2 candidates");
        assert!(
            !statements.has_pending(),
            "answered, and ambiguous for good"
        );
        // A clean cycle settles it.
        statements.parsed(2, unnamed("SELECT 2", false));
        statements.settle(3, |c| c == 1);
        assert_eq!(text(statements.runs(3)), "SELECT 2");
        assert!(!statements.has_pending());
    }

    #[test]
    fn the_last_parse_of_a_clean_cycle_is_the_one_held() {
        let mut statements = UnnamedStatements::default();
        statements.parsed(0, unnamed("SELECT 1", false));
        statements.parsed(0, unnamed("SELECT 2", false));
        assert_eq!(statements.unanswered(), Some(0));
        statements.settle(1, |_| false);
        assert_eq!(text(statements.runs(1)), "SELECT 2");
        assert_eq!(statements.unanswered(), None);
    }
}
