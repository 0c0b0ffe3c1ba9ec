//! A session's working parts, wired once: the gate (the client → upstream direction) and what
//! the upstream → client direction reads — the matcher's answers, the gateway's own notices,
//! the audit trail's results, the masker — sharing where the requests stand. The session runs
//! them; the fuzz harness runs the very same wiring over bytes in memory.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use super::progress::Progress;
use crate::identity::SessionInfo;
use crate::proxy::gate::{Gate, HoldSignals};
use crate::proxy::masker::Masker;
use crate::proxy::pipeline::Answers;
use crate::proxy::shared::Shared;
use crate::proxy::trail::{Results, Trail};

pub(crate) struct Parts {
    pub gate: Gate,
    pub answers: Answers,
    /// The gateway's notices for the client (a statement held for approval).
    pub notices: mpsc::UnboundedReceiver<Bytes>,
    /// `None` when auditing is off.
    pub results: Option<Results>,
    /// `None` without a plugin directory.
    pub masker: Option<Masker>,
    pub progress: Arc<Progress>,
}

impl Parts {
    /// The parts of session `info`; `cancelled` is notified by the client's CancelRequest.
    pub(crate) fn new(shared: &Arc<Shared>, info: SessionInfo, cancelled: Arc<Notify>) -> Parts {
        let (requests, answers) = crate::proxy::pipeline::pipeline();
        let (notices_out, notices) = mpsc::unbounded_channel();
        let progress = Arc::new(Progress::default());
        let (trail, results) = Trail::new(shared.audit.clone(), info.clone(), progress.clone());
        let (tracker, masker) = match crate::proxy::masker::new(shared, &info) {
            Some((tracker, masker)) => (Some(tracker), Some(masker)),
            None => (None, None),
        };
        let signals = HoldSignals {
            notices: notices_out,
            cancelled,
        };
        let gate = Gate::new(
            shared.clone(),
            info,
            requests,
            signals,
            trail,
            tracker,
            progress.clone(),
        );
        Parts {
            gate,
            answers,
            notices,
            results,
            masker,
            progress,
        }
    }
}
