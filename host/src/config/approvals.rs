//! `[approvals]` and `[state]`: the default route of held statements and where requests and
//! grants are kept.

use std::time::Duration;

use serde::Deserialize;

/// `[approvals]`: the route for requests no approval plugin routes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// Token groups whose members may decide.
    #[serde(default = "default_approver_groups")]
    pub approver_groups: Vec<String>,
    /// Distinct approvers a request needs.
    #[serde(default = "default_approvals_needed")]
    pub approvals_needed: u32,
    /// How long a held statement waits for a decision.
    #[serde(default = "default_approval_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Statements one subject may have waiting at once; beyond it a new one is refused with
    /// 53400 (0: no limit).
    #[serde(default = "default_max_pending_per_subject")]
    pub max_pending_per_subject: usize,
    /// URLs (http or https) that get a JSON POST (Slack-compatible `text`) for each held
    /// statement.
    #[serde(default)]
    pub webhooks: Vec<url::Url>,
    /// How long one webhook delivery may take.
    #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
    pub webhook_timeout: Duration,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig {
            approver_groups: default_approver_groups(),
            approvals_needed: default_approvals_needed(),
            timeout: default_approval_timeout(),
            max_pending_per_subject: default_max_pending_per_subject(),
            webhooks: Vec::new(),
            webhook_timeout: default_webhook_timeout(),
        }
    }
}

fn default_approver_groups() -> Vec<String> {
    vec!["approvers".to_owned()]
}
fn default_approvals_needed() -> u32 {
    1
}
fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_pending_per_subject() -> usize {
    10
}
fn default_approval_timeout() -> Duration {
    Duration::from_secs(300)
}

/// `[state]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// `sqlite://PATH` (relative to the config file); default `state.db` in `data_dir`.
    pub url: Option<String>,
}
