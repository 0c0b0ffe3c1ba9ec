//! Prometheus metrics, served as text at `GET /metrics` on the admin listener. Counters are
//! updated where things happen; the approvals-pending gauge is read from the store at scrape
//! time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatementLabels {
    pub kind: &'static str,
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginFailureLabels {
    pub plugin: String,
    /// `timeout`, `trap`, `instantiate`, `reported`.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuerLabels {
    pub issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExchangeLabels {
    pub issuer: String,
    /// `issued`, `denied`, or the class of a refused subject token.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DatabaseLabels {
    pub database: String,
}

pub struct Metrics {
    registry: Registry,
    pub sessions_open: Gauge,
    pub sessions: Counter,
    pub login_failures: Family<ReasonLabels, Counter>,
    pub statements: Family<StatementLabels, Counter>,
    pub plugin_call_seconds: Family<PluginLabels, Histogram>,
    pub plugin_failures: Family<PluginFailureLabels, Counter>,
    pub plugin_calls_running: Family<PluginLabels, Gauge>,
    pub approvals_pending: Gauge,
    pub audit_write_seconds: Histogram,
    pub audit_write_failures: Counter,
    pub plugin_reloads: Counter,
    pub plugin_load_failures: Family<PluginLabels, Counter>,
    pub upstream_connect_errors: Family<DatabaseLabels, Counter>,
    pub upstream_warm: Family<DatabaseLabels, Gauge>,
    pub upstream_warm_taken: Family<DatabaseLabels, Counter>,
    pub client_write_stalls: Counter,
    pub client_writes_stalled: Gauge,
    pub revocations: Counter,
    pub sessions_revoked: Counter,
    pub jwks_fetches: Family<IssuerLabels, Counter>,
    pub token_exchanges: Family<ExchangeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sluice");
        let sessions_open = Gauge::default();
        registry.register(
            "sessions_open",
            "Client sessions logged in now",
            sessions_open.clone(),
        );
        let sessions = Counter::default();
        registry.register("sessions", "Client sessions logged in", sessions.clone());
        let login_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "login_failures",
            "Logins refused after the startup packet, by reason",
            login_failures.clone(),
        );
        let statements = Family::<StatementLabels, Counter>::default();
        registry.register(
            "statements",
            "Statements judged, by kind and decision",
            statements.clone(),
        );
        // 1 µs .. ~1 s.
        let plugin_call_seconds = Family::<PluginLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1e-6, 4.0, 11))
        });
        registry.register(
            "plugin_call_seconds",
            "Policy plugin calls (cached verdicts not counted)",
            plugin_call_seconds.clone(),
        );
        let plugin_failures = Family::<PluginFailureLabels, Counter>::default();
        registry.register(
            "plugin_failures",
            "Plugin calls that trapped, timed out or reported an error",
            plugin_failures.clone(),
        );
        let plugin_calls_running = Family::<PluginLabels, Gauge>::default();
        registry.register(
            "plugin_calls_running",
            "Policy plugin calls in progress now (one stuck in a plugin stays here)",
            plugin_calls_running.clone(),
        );
        let approvals_pending = Gauge::default();
        registry.register(
            "approvals_pending",
            "Approval requests waiting for a decision",
            approvals_pending.clone(),
        );
        // 10 µs .. ~10 s.
        let audit_write_seconds = Histogram::new(exponential_buckets(1e-5, 4.0, 11));
        registry.register(
            "audit_write_seconds",
            "Audit batch writes (and fsyncs), one per group commit",
            audit_write_seconds.clone(),
        );
        let audit_write_failures = Counter::default();
        registry.register(
            "audit_write_failures",
            "Audit batches that could not be written",
            audit_write_failures.clone(),
        );
        let plugin_reloads = Counter::default();
        registry.register(
            "plugin_reloads",
            "Plugin directory reloads",
            plugin_reloads.clone(),
        );
        let plugin_load_failures = Family::<PluginLabels, Counter>::default();
        registry.register(
            "plugin_load_failures",
            "Plugin files that failed to load",
            plugin_load_failures.clone(),
        );
        let upstream_connect_errors = Family::<DatabaseLabels, Counter>::default();
        registry.register(
            "upstream_connect_errors",
            "Failed upstream logins, by database",
            upstream_connect_errors.clone(),
        );
        let upstream_warm = Family::<DatabaseLabels, Gauge>::default();
        registry.register(
            "upstream_warm",
            "Upstream connections reset and kept warm now, by database",
            upstream_warm.clone(),
        );
        let upstream_warm_taken = Family::<DatabaseLabels, Counter>::default();
        registry.register(
            "upstream_warm_taken",
            "Sessions that got a warm upstream connection instead of a new login, by database",
            upstream_warm_taken.clone(),
        );
        let client_write_stalls = Counter::default();
        registry.register(
            "client_write_stalls",
            "Writes to a client still waiting after [server] client_write_stall",
            client_write_stalls.clone(),
        );
        let client_writes_stalled = Gauge::default();
        registry.register(
            "client_writes_stalled",
            "Sessions whose write to the client has been waiting longer than [server] client_write_stall now",
            client_writes_stalled.clone(),
        );
        let revocations = Counter::default();
        registry.register(
            "revocations",
            "Revocations made (tokens, subjects or issuers)",
            revocations.clone(),
        );
        let sessions_revoked = Counter::default();
        registry.register(
            "sessions_revoked",
            "Live sessions ended because their token was revoked",
            sessions_revoked.clone(),
        );
        let jwks_fetches = Family::<IssuerLabels, Counter>::default();
        registry.register(
            "jwks_fetches",
            "Fetches of a trusted issuer's signing keys",
            jwks_fetches.clone(),
        );
        let token_exchanges = Family::<ExchangeLabels, Counter>::default();
        registry.register(
            "token_exchanges",
            "Token exchanges, by issuer and outcome",
            token_exchanges.clone(),
        );
        Metrics {
            registry,
            jwks_fetches,
            token_exchanges,
            revocations,
            sessions_revoked,
            client_write_stalls,
            client_writes_stalled,
            sessions_open,
            sessions,
            login_failures,
            statements,
            plugin_call_seconds,
            plugin_failures,
            plugin_calls_running,
            approvals_pending,
            audit_write_seconds,
            audit_write_failures,
            plugin_reloads,
            plugin_load_failures,
            upstream_connect_errors,
            upstream_warm,
            upstream_warm_taken,
        }
    }

    /// The call-latency histogram of one plugin, for its instances to keep.
    pub fn plugin_calls(&self, plugin: &str) -> Histogram {
        self.plugin_call_seconds
            .get_or_create(&PluginLabels {
                plugin: plugin.to_owned(),
            })
            .clone()
    }

    /// The in-progress gauge of one plugin, for its instances to keep.
    pub fn plugin_running(&self, plugin: &str) -> Gauge {
        self.plugin_calls_running
            .get_or_create(&PluginLabels {
                plugin: plugin.to_owned(),
            })
            .clone()
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A session's handles on the statement counters it has counted in (static labels: no
/// allocation per statement): a statement is then one atomic add, not a lookup under the
/// counter family's lock, which every session on every thread shares.
#[derive(Default)]
pub struct StatementCounts {
    used: Vec<(&'static str, &'static str, Counter)>,
}

impl StatementCounts {
    pub fn count(&mut self, metrics: &Metrics, kind: &'static str, decision: &'static str) {
        if let Some((_, _, counter)) = self
            .used
            .iter()
            .find(|(k, d, _)| *k == kind && *d == decision)
        {
            counter.inc();
            return;
        }
        let counter = metrics
            .statements
            .get_or_create(&StatementLabels { kind, decision })
            .clone();
        counter.inc();
        self.used.push((kind, decision, counter));
    }
}
