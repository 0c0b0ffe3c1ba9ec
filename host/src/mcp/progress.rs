//! Progress notifications for a call that asked for them (a `progressToken`): each notice the
//! gateway sends while the statement runs or waits (the approval id, who decided) is one, in
//! order. A client that does not read them loses the surplus, never the call.

use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::{RequestContext, RoleServer};
use tokio::sync::mpsc;

use super::client::Report;

/// Notifications waiting to be sent before more are dropped.
const BACKLOG: usize = 16;

pub struct Progress {
    sender: Option<mpsc::Sender<String>>,
}

impl Progress {
    pub fn new(
        context: &RequestContext<RoleServer>,
        request_meta: Option<ProgressToken>,
    ) -> Progress {
        let Some(token) = context.meta.get_progress_token().or(request_meta) else {
            return Progress { sender: None };
        };
        let (sender, mut messages) = mpsc::channel::<String>(BACKLOG);
        let peer = context.peer.clone();
        tokio::spawn(async move {
            let mut sent = 0u32;
            while let Some(message) = messages.recv().await {
                sent += 1;
                let mut param = ProgressNotificationParam::new(token.clone(), f64::from(sent));
                param.message = Some(message);
                if let Err(e) = peer.notify_progress(param).await {
                    tracing::debug!(error = %e, "progress notification not delivered");
                    return;
                }
            }
        });
        Progress {
            sender: Some(sender),
        }
    }

    pub fn send(&self, notice: &Report) {
        if let Some(sender) = &self.sender {
            let _ = sender.try_send(notice.message.clone());
        }
    }
}
