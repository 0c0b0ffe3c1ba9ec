//! A misbehaving approval plugin for the gateway's fault tests; not for production. Config
//! `mode`: `loop` spins forever, `alloc` allocates without bound, `trap` panics, `nobody` routes
//! to an empty list of groups.
use sluice_sdk::{ApprovalRequest, ApprovalRoute, PluginError, Router, Routing};

struct RouteFaults;

impl Router for RouteFaults {
    fn route(_request: ApprovalRequest) -> Result<Routing, PluginError> {
        match sluice_sdk::config("mode").as_deref() {
            Some("loop") => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Some("alloc") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(Vec::with_capacity(8 << 20));
                    std::hint::black_box(&hoard);
                }
            }
            Some("trap") => panic!("test-route-faults asked to trap"),
            Some("nobody") => Ok(Routing::Ask(ApprovalRoute {
                approver_groups: vec![" ".into()],
                approvals_needed: 1,
                timeout_ms: None,
                notification: None,
            })),
            _ => Ok(Routing::Pass),
        }
    }
}

sluice_sdk::export_router!(RouteFaults);
