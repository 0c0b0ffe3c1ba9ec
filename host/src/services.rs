//! The gateway's long-lived services, built once from a validated configuration before
//! anything listens: keys, the audit log, TLS, the upstreams and their catalog caches, the
//! plugin host, the state store, the approval queue and the revocations. The proxy and the admin listener each
//! take what they need from here; neither builds a service itself.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use crate::approvals::{Approvals, Notifier, Route};
use crate::audit::{Audit, AuditError};
use crate::catalog::Catalog;
use crate::config::{Config, ConfigError};
use crate::identity::external::{IssuerSetupError, TrustedIssuers};
use crate::identity::{KeyError, TokenAuthority};
use crate::masking::HashKey;
use crate::metrics::Metrics;
use crate::plugins::{PluginError, PluginHost};
use crate::revocations::Revocations;
use crate::state::{SqliteStore, StateError};
use crate::upstream::Upstream;

pub struct Services {
    pub config: Config,
    pub tls: TlsAcceptor,
    pub tokens: Arc<TokenAuthority>,
    /// By client-visible database name.
    pub upstreams: HashMap<String, Arc<Upstream>>,
    /// The catalog cache of each database, by client-visible name.
    pub catalogs: HashMap<String, Arc<Catalog>>,
    /// Plugin engine and the serving set; `None` without a `[plugins]` directory.
    pub plugins: Option<Arc<PluginHost>>,
    /// The approval queue held statements wait in.
    pub approvals: Arc<Approvals>,
    /// Tokens taken back.
    pub revocations: Arc<Revocations>,
    /// External identity providers whose tokens may be exchanged.
    pub issuers: Arc<TrustedIssuers>,
    /// Approvers' sign-in through an OIDC provider (`[admin.sign_in]`).
    pub sign_in: Option<Arc<crate::admin::sign_in::service::SignIn>>,
    /// The audit log (a no-op when `[audit] enabled = false`).
    pub audit: Arc<Audit>,
    pub metrics: Arc<Metrics>,
    /// The key of `hash` masks.
    pub hash_key: HashKey,
}

#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Plugins(#[from] PluginError),
    #[error("cannot create data_dir {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("cannot open the state store: {0}")]
    State(#[from] StateError),
    #[error(transparent)]
    Issuer(#[from] IssuerSetupError),
    #[error("{0}")]
    SignIn(String),
}

impl Services {
    /// Loads keys, secrets and certificates named by `config` and starts the services; fails
    /// before anything listens.
    pub fn build(config: Config) -> Result<Services, ServicesError> {
        std::fs::create_dir_all(&config.server.data_dir).map_err(|source| {
            ServicesError::DataDir {
                path: config.server.data_dir.clone(),
                source,
            }
        })?;
        let tokens = Arc::new(TokenAuthority::from_config(&config.identity)?);
        let signing_key = crate::identity::SigningKey::load(&config.identity.signing_key)?;
        let hash_key = hash_key(&signing_key);
        let metrics = Arc::new(Metrics::new());
        let audit = Arc::new(Audit::start(
            &config.audit,
            config.audit_path(),
            Some(signing_key),
            Some(metrics.clone()),
        )?);
        let tls = TlsAcceptor::from(crate::tls::server_config(
            &config.tls,
            &config.server.data_dir,
        )?);
        let secrets = config.load_upstream_secrets()?;
        let mut upstreams = HashMap::new();
        let mut catalogs = HashMap::new();
        for (i, (upstream, password)) in config.upstreams.iter().zip(secrets).enumerate() {
            let built = Arc::new(
                Upstream::from_config(
                    upstream,
                    password,
                    &config.source,
                    config.limits.statement_timeout,
                )?
                .with_roles(&upstream.roles, config.load_role_secrets(i)?)
                .counted_in(&metrics, &upstream.database),
            );
            let max_message = config.server.max_upstream_message_size;
            let reader = built.clone();
            let catalog = Catalog::new(config.masking.catalog_ttl, move || {
                crate::catalog::reader::read_catalog(reader.clone(), max_message)
            });
            catalogs.insert(upstream.database.clone(), Arc::new(catalog));
            upstreams.insert(upstream.database.clone(), built);
        }
        let plugins = match &config.plugins.dir {
            Some(dir) => {
                let host = PluginHost::new(
                    Some(dir.clone()),
                    config.server.data_dir.join("plugin-cache"),
                    crate::plugins::Limits {
                        timeout: config.plugins.timeout,
                        memory_bytes: (config.plugins.memory_mib as usize) << 20,
                    },
                )?;
                host.set_audit(audit.clone());
                host.set_metrics(metrics.clone());
                host.require(config.plugins.required.iter().cloned());
                host.bound_compilation(crate::plugins::CompileBounds {
                    max_bytes: (config.plugins.max_component_mib as usize) << 20,
                    max_functions: config.plugins.max_functions,
                });
                host.reload()?;
                Some(host)
            }
            None => None,
        };
        let issuers = Arc::new(TrustedIssuers::from_config(
            &config.identity,
            metrics.clone(),
        )?);
        let sign_in = crate::admin::sign_in::service::SignIn::from_config(
            &config,
            issuers.clone(),
            audit.clone(),
        )
        .map_err(ServicesError::SignIn)?
        .map(Arc::new);
        let store = Arc::new(SqliteStore::open(&config.state_path()?)?);
        let revocations = Arc::new(Revocations::open(
            store.clone(),
            audit.clone(),
            metrics.clone(),
            config.identity.max_ttl,
        )?);
        let approvals = Approvals::new(
            store,
            Route {
                approver_groups: config.approvals.approver_groups.clone(),
                approvals_needed: config.approvals.approvals_needed,
                timeout: config.approvals.timeout,
                max_pending_per_subject: config.approvals.max_pending_per_subject,
            },
            Notifier::new(
                config.approvals.webhooks.clone(),
                config.approvals.webhook_timeout,
            ),
            audit.clone(),
        );
        Ok(Services {
            config,
            tls,
            tokens,
            upstreams,
            catalogs,
            plugins,
            approvals,
            revocations,
            issuers,
            sign_in,
            audit,
            metrics,
            hash_key,
        })
    }
}

/// The `hash` mask key: stable for as long as the signing key is (Ed25519 signatures are
/// deterministic), and not the signing key itself.
fn hash_key(signing_key: &crate::identity::SigningKey) -> HashKey {
    let signature = signing_key.sign(b"sluice masking hash key v1");
    let digest = ring::digest::digest(&ring::digest::SHA256, &signature);
    let mut key = [0; 16];
    key.copy_from_slice(&digest.as_ref()[..16]);
    HashKey::new(key)
}
