//! A misbehaving plugin for the gateway's fault tests; not for production. Config `mode`:
//! `loop` spins forever, `deny-param` denies when a parameter equals config `param`, `alloc` allocates without bound, `trap` panics, `error` reports an
//! error, `deny` denies everything, `allow` allows everything. Config `match` limits the
//! misbehaviour to statements containing that text.
use sluice_sdk::{Decision, PluginError, Policy, Session, Statement};

struct Faults;

impl Policy for Faults {
    fn evaluate(_session: Session, statement: Statement) -> Result<Decision, PluginError> {
        if let Some(needle) = sluice_sdk::config("match")
            && !statement.text.contains(&needle)
        {
            return Ok(Decision::Allow);
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
            Some("error") => Err(PluginError::Other("test-faults reports an error".into())),
            Some("deny") => Ok(Decision::Deny("test-faults denies everything".into())),
            // Denies when a Bind parameter equals config `param`.
            Some("deny-param") => {
                let forbidden = sluice_sdk::config("param");
                Ok(
                    if statement
                        .params
                        .iter()
                        .any(|p| p.is_some() && *p == forbidden)
                    {
                        Decision::Deny("forbidden parameter value".into())
                    } else {
                        Decision::Allow
                    },
                )
            }
            _ => Ok(Decision::Allow),
        }
    }
}

sluice_sdk::export_policy!(Faults);
