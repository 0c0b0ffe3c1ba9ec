//! What the admin endpoints report on, taken from the gateway's services.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::approvals::Approvals;
use crate::identity::TokenAuthority;
use crate::revocations::Revocations;

/// What the admin endpoints report on.
#[derive(Default)]
pub struct AdminState {
    /// False once the gateway stops accepting clients (draining for shutdown).
    pub accepting: AtomicBool,
    /// The plugin host, when plugins are configured.
    pub plugins: Option<Arc<crate::plugins::PluginHost>>,
    /// The approval queue and what authenticates approvers; absent, the approvals API answers
    /// 503.
    pub approvals: Option<ApprovalsApi>,
    /// Token exchange; absent (no `[[identity.issuers]]`), `/v1/token` answers 503.
    pub exchange: Option<ExchangeApi>,
    /// The revocations and who may make them; absent, the revocations API answers 503.
    pub revocations: Option<RevocationsApi>,
    /// What `/metrics` serves.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Readiness also needs a writable audit log (when statements are refused without one).
    pub audit: Option<Arc<crate::audit::Audit>>,
    /// Approvers' sign-in through an OIDC provider; absent, the page asks for a token.
    pub sign_in: Option<Arc<super::sign_in::service::SignIn>>,
}

impl AdminState {
    /// The admin view of the gateway's services: its plugins, its approval queue, its metrics
    /// and audit log.
    pub fn for_services(services: &crate::services::Services) -> AdminState {
        AdminState {
            accepting: AtomicBool::new(true),
            plugins: services.plugins.clone(),
            approvals: Some(ApprovalsApi {
                approvals: services.approvals.clone(),
                tokens: services.tokens.clone(),
                revocations: services.revocations.clone(),
                sign_in: services.sign_in.clone(),
            }),
            exchange: (!services.issuers.is_empty()).then(|| ExchangeApi {
                issuers: services.issuers.clone(),
                tokens: services.tokens.clone(),
                revocations: services.revocations.clone(),
                audit: services.audit.clone(),
                metrics: services.metrics.clone(),
                max_ttl: services.config.identity.max_ttl,
                plugins: services.plugins.clone(),
                approvals: services.approvals.clone(),
            }),
            revocations: Some(RevocationsApi {
                revocations: services.revocations.clone(),
                tokens: services.tokens.clone(),
                sign_in: services.sign_in.clone(),
                admin_groups: services.config.admin.admin_groups.clone(),
                issuers: std::iter::once(services.config.identity.issuer.clone())
                    .chain(
                        services
                            .config
                            .identity
                            .issuers
                            .iter()
                            .filter_map(|i| i.issuer().map(str::to_owned)),
                    )
                    .collect(),
            }),
            metrics: Some(services.metrics.clone()),
            audit: Some(services.audit.clone()),
            sign_in: services.sign_in.clone(),
        }
    }
}

/// What the approvals API needs.
#[derive(Clone)]
pub struct ApprovalsApi {
    pub approvals: Arc<Approvals>,
    pub tokens: Arc<TokenAuthority>,
    pub revocations: Arc<Revocations>,
    /// Signed-in approvers (a session cookie instead of a token).
    pub sign_in: Option<Arc<super::sign_in::service::SignIn>>,
}

/// What the token exchange needs.
#[derive(Clone)]
pub struct ExchangeApi {
    pub issuers: Arc<crate::identity::external::TrustedIssuers>,
    pub tokens: Arc<TokenAuthority>,
    pub revocations: Arc<Revocations>,
    pub audit: Arc<crate::audit::Audit>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// `identity.max_ttl`.
    pub max_ttl: std::time::Duration,
    /// The access plugins, when plugins are configured.
    pub plugins: Option<Arc<crate::plugins::PluginHost>>,
    /// Where requests that need approval wait.
    pub approvals: Arc<Approvals>,
}

/// What the revocations API needs.
#[derive(Clone)]
pub struct RevocationsApi {
    pub revocations: Arc<Revocations>,
    pub tokens: Arc<TokenAuthority>,
    /// Signed-in admins (a session cookie instead of a token).
    pub sign_in: Option<Arc<super::sign_in::service::SignIn>>,
    /// Token groups whose members may revoke (`[admin] admin_groups`).
    pub admin_groups: Vec<String>,
    /// The issuers a revocation may name: the gateway's own and the trusted ones (a name
    /// that matches no token would revoke nothing).
    pub issuers: Vec<String>,
}
