//! Connection limits: open client connections overall (counted from accept, login included)
//! and sessions per token subject. A slot is held by a guard and given back when it drops, so
//! no path out of a session can leak one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct ConnectionLimits {
    open: Arc<AtomicUsize>,
    per_subject: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open client connection, counted until dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    open: Arc<AtomicUsize>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One session of a subject, counted until dropped.
#[derive(Debug)]
pub struct SubjectSlot {
    subject: String,
    per_subject: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for SubjectSlot {
    fn drop(&mut self) {
        let mut counts = self.per_subject.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.subject) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.subject);
            }
        }
    }
}

impl ConnectionLimits {
    /// Counts a newly accepted connection; returns its slot and how many are open with it.
    pub fn connection(&self) -> (ConnectionSlot, usize) {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        (
            ConnectionSlot {
                open: self.open.clone(),
            },
            open,
        )
    }

    /// A session slot for `subject`, or `None` if it already holds `max` (0: no limit).
    pub fn subject(&self, subject: &str, max: usize) -> Option<SubjectSlot> {
        let mut counts = self.per_subject.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(subject.to_owned()).or_default();
        if max > 0 && *count >= max {
            return None;
        }
        *count += 1;
        Some(SubjectSlot {
            subject: subject.to_owned(),
            per_subject: self.per_subject.clone(),
        })
    }

    #[cfg(test)]
    fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_given_back_when_dropped() {
        let limits = ConnectionLimits::default();
        let (a, n) = limits.connection();
        assert_eq!(n, 1);
        let (_b, n) = limits.connection();
        assert_eq!(n, 2);
        drop(a);
        assert_eq!(limits.open_connections(), 1);

        let first = limits.subject("agent", 2).expect("first");
        let _second = limits.subject("agent", 2).expect("second");
        assert!(
            limits.subject("agent", 2).is_none(),
            "third is over the limit"
        );
        assert!(
            limits.subject("other", 2).is_some(),
            "other subjects unaffected"
        );
        drop(first);
        assert!(limits.subject("agent", 2).is_some(), "a slot came back");
        assert!(limits.subject("agent", 0).is_some(), "0 means no limit");
    }
}
