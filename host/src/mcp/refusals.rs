//! Refused tokens at the MCP door, recorded as the Postgres listener records refused logins
//! (`login_failure`), but at most once per address in a while: an HTTP client on a kept-alive
//! connection can send refused requests far faster than a Postgres client can open
//! connections, and the audit log is not a place to fill. The next record from the address
//! says how many were not recorded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One record per address per this long.
const WINDOW: Duration = Duration::from_secs(10);
/// Addresses remembered at most; past it the memory starts over.
const CAPACITY: usize = 4096;

#[derive(Default)]
pub struct RefusalLog {
    by_address: Mutex<HashMap<IpAddr, (Instant, u64)>>,
}

impl RefusalLog {
    /// Whether a refusal from `address` is recorded now: `Some(n)` with the `n` refusals from
    /// it not recorded since its last record; `None` to count it and record nothing.
    pub fn admit(&self, address: IpAddr) -> Option<u64> {
        let mut map = self.by_address.lock().expect("not poisoned");
        if map.len() >= CAPACITY && !map.contains_key(&address) {
            map.clear();
        }
        match map.get_mut(&address) {
            Some((since, unrecorded)) if since.elapsed() < WINDOW => {
                *unrecorded += 1;
                None
            }
            Some((since, unrecorded)) => {
                let missed = *unrecorded;
                *since = Instant::now();
                *unrecorded = 0;
                Some(missed)
            }
            None => {
                map.insert(address, (Instant::now(), 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_recorded_once_per_window_and_others_are_not_held_back() {
        let log = RefusalLog::default();
        let (a, b) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert_eq!(log.admit(a), Some(0));
        assert_eq!(log.admit(a), None);
        assert_eq!(log.admit(a), None);
        assert_eq!(log.admit(b), Some(0));
        // The window over, the next record counts the ones not recorded.
        log.by_address.lock().unwrap().get_mut(&a).unwrap().0 = Instant::now() - WINDOW;
        assert_eq!(log.admit(a), Some(2));
    }
}
