//! A misbehaving plugin for the gateway's fault tests; not for production. Config `mode`:
//! `loop` spins forever, `alloc` allocates without bound, `trap` panics, `error` reports an
//! error, `deny` denies everything, `allow` allows everything, `deny-param` denies when a
//! parameter equals config `param`, `deny-after` allows the first config `calls` calls of its
//! instance and denies every later one, `refuse-open` fails when the session is opened,
//! `sleep` sleeps 30 s in a host call (WASI's clock), `deny-long` denies with a reason of config `bytes` bytes that starts with a terminal escape
//! and a newline (a forged log line).
//! Config `match` limits the misbehaviour to statements containing that text; config `reuse`
//! (`never`, the default, `text` or `shape`) is the reuse the plugin declares for its verdicts.
use std::sync::atomic::{AtomicU64, Ordering};

use sluice_sdk::{Decision, PluginError, Policy, Reuse, Session, Statement, Verdict};

struct Faults;

/// Calls this instance has answered.
static CALLS: AtomicU64 = AtomicU64::new(0);

impl Policy for Faults {
    fn open(_session: &Session) -> Result<(), PluginError> {
        match sluice_sdk::config("mode").as_deref() {
            Some("refuse-open") => Err(PluginError::InvalidConfig(
                "test-faults refuses to open".into(),
            )),
            _ => Ok(()),
        }
    }

    fn evaluate(_session: &Session, statement: Statement) -> Result<Verdict, PluginError> {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        let reuse = match sluice_sdk::config("reuse").as_deref() {
            Some("text") => Reuse::SameText,
            Some("shape") => Reuse::SameShape,
            _ => Reuse::Never,
        };
        let verdict = |decision| Ok(Verdict { decision, reuse });
        if let Some(needle) = sluice_sdk::config("match")
            && !statement.text.contains(&needle)
        {
            return verdict(Decision::Allow);
        }
        match sluice_sdk::config("mode").as_deref() {
            Some("loop") => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Some("alloc") => {
                // Reserve without touching: grows linear memory at full speed until the cap.
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(Vec::with_capacity(8 << 20));
                    std::hint::black_box(&hoard);
                }
            }
            Some("trap") => panic!("test-faults asked to trap"),
            Some("sleep") => {
                std::thread::sleep(std::time::Duration::from_secs(30));
                verdict(Decision::Allow)
            }
            Some("deny-long") => {
                let bytes: usize = sluice_sdk::config("bytes")
                    .and_then(|b| b.parse().ok())
                    .unwrap_or(10 << 20);
                let mut reason = String::from("\u{1b}[2K\nFORGED log line ");
                reason.push_str(&"x".repeat(bytes.saturating_sub(reason.len())));
                verdict(Decision::Deny(reason))
            }
            Some("error") => Err(PluginError::Other("test-faults reports an error".into())),
            Some("deny") => verdict(Decision::Deny("test-faults denies everything".into())),
            Some("deny-param") => {
                let forbidden = sluice_sdk::config("param");
                let hit = statement
                    .params
                    .iter()
                    .any(|p| p.is_some() && *p == forbidden);
                verdict(if hit {
                    Decision::Deny("forbidden parameter value".into())
                } else {
                    Decision::Allow
                })
            }
            Some("deny-after") => {
                let allowed: u64 = sluice_sdk::config("calls")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                verdict(if calls > allowed {
                    Decision::Deny(format!("call {calls} is over the limit of {allowed}"))
                } else {
                    Decision::Allow
                })
            }
            _ => verdict(Decision::Allow),
        }
    }
}

sluice_sdk::export_policy!(Faults);
