//! What every session shares: the gateway's services and the proxy's own registries (cancel
//! keys, analyses, connection limits, session numbers). Its fields are the proxy's own: the
//! rest of the gateway builds it from [`Services`] and hands it to the listener (`Gateway`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::analysis::Analyzer;
use crate::approvals::Approvals;
use crate::config::Config;
use crate::identity::TokenAuthority;
use crate::plugins::PluginHost;
use crate::services::{Services, ServicesError};

use super::cancel::CancelRegistry;
use super::limits;
use crate::upstream::Upstream;

/// Everything sessions share, built once at start from a validated config.
pub struct Shared {
    pub(super) config: Config,
    pub(super) tls: TlsAcceptor,
    pub(super) tokens: Arc<TokenAuthority>,
    pub(super) upstreams: HashMap<String, Arc<Upstream>>,
    pub(super) cancels: Arc<CancelRegistry>,
    /// Statement analyses, cached by text.
    pub(super) analyzer: Analyzer,
    /// Plugin engine and the serving set; `None` without a `[plugins]` directory.
    pub(super) plugins: Option<Arc<PluginHost>>,
    /// Fired when sessions must end now (end of the shutdown grace period).
    pub(super) terminate: CancellationToken,
    pub(super) limits: limits::ConnectionLimits,
    /// The approval queue held statements wait in.
    pub(super) approvals: Arc<Approvals>,
    /// Tokens taken back: refused at login, and sessions using them end.
    pub(super) revocations: Arc<crate::revocations::Revocations>,
    /// Identity providers whose tokens may log in directly where they allow it.
    pub(super) issuers: Arc<crate::identity::external::TrustedIssuers>,
    /// The audit log (a no-op when `[audit] enabled = false`).
    pub(super) audit: Arc<crate::audit::Audit>,
    pub(super) metrics: Arc<crate::metrics::Metrics>,
    /// The masking catalog cache of each database, by client-visible name.
    pub(super) catalogs: HashMap<String, Arc<crate::catalog::Catalog>>,
    /// The key of `hash` masks.
    pub(super) hash_key: crate::masking::HashKey,
    pub(super) next_session: AtomicU64,
}

impl Shared {
    /// The services built from `config` (`Services::build`), and what sessions add to them.
    pub fn new(config: Config) -> Result<Shared, ServicesError> {
        Ok(Shared::from_services(Services::build(config)?))
    }

    /// What sessions share: the gateway's services and the proxy's own registries.
    pub fn from_services(services: Services) -> Shared {
        let Services {
            config,
            tls,
            tokens,
            upstreams,
            catalogs,
            plugins,
            approvals,
            revocations,
            issuers,
            sign_in: _,
            audit,
            metrics,
            hash_key,
        } = services;
        Shared {
            approvals,
            revocations,
            issuers,
            audit,
            metrics,
            config,
            tls,
            tokens,
            upstreams,
            cancels: Arc::new(CancelRegistry::default()),
            analyzer: Analyzer::default(),
            plugins,
            terminate: CancellationToken::new(),
            limits: limits::ConnectionLimits::default(),
            catalogs,
            hash_key,
            next_session: AtomicU64::new(1),
        }
    }
}
