//! Masking plugin instances of one session, as for policies: one instance per plugin version
//! and session, created on first use, `open`ed once, discarded after a trap. A plugin whose
//! `open` says it masks nothing in this session is remembered as inactive and never called
//! again for it. A plugin that exports `masking-reuse` (0.1.3) and answers `same-columns` is
//! asked once per set of columns: its plans are remembered per instance.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::Store;

use super::bindings::v0_1::masking::MaskingPlugin as MaskingBindings;
use super::bindings::v0_1::masking_reuse::exports::sluice::plugin::masking_reuse::ReuseScope;
use super::bindings::v0_1::sluice::plugin::types as wit;
use super::convert::LazyStatement;
use super::host::PluginHost;
use super::instances::CallFailure;
use super::instances::{classify_trap, count_failure, reported_message};
use super::plans::Plans;
use super::set::{MaskingPlugin, PluginSet};
use super::state::PluginState;

struct Live {
    store: Store<PluginState>,
    bindings: MaskingBindings,
    /// `Some` when the plugin said its plans depend on the columns alone.
    plans: Option<Plans>,
    /// This plugin's call-latency histogram, looked up once per instance rather than per call.
    call_seconds: Option<prometheus_client::metrics::histogram::Histogram>,
}

/// One plugin's instance in this session: live, or inactive by its own `open`.
enum Instance {
    Live(Box<Live>),
    Inactive,
}

pub struct SessionMaskers {
    host: Arc<PluginHost>,
    /// By plugin id.
    instances: Vec<(u64, Instance)>,
    generation: u64,
}

impl SessionMaskers {
    pub fn new(host: Arc<PluginHost>) -> SessionMaskers {
        SessionMaskers {
            host,
            instances: Vec::new(),
            generation: 0,
        }
    }

    pub fn host(&self) -> &Arc<PluginHost> {
        &self.host
    }

    /// Drops instances of plugin versions that are no longer serving.
    pub fn retain(&mut self, set: &PluginSet) {
        if set.generation == self.generation {
            return;
        }
        self.generation = set.generation;
        self.instances
            .retain(|(id, _)| set.maskers.iter().any(|p| p.id == *id));
    }

    /// Whether any serving plugin masks something in this session; a plugin that cannot be
    /// opened counts as masking (fail closed).
    pub async fn any_active(
        &mut self,
        set: &PluginSet,
        session: &crate::identity::SessionInfo,
    ) -> bool {
        for plugin in &set.maskers {
            match self.instance(plugin, session).await {
                Ok(None) => {}
                Ok(Some(_)) | Err(_) => return true,
            }
        }
        false
    }

    /// The plugin's plan for `columns`, remembered or asked; `None` when it masks nothing in
    /// this session.
    pub async fn plan(
        &mut self,
        plugin: &MaskingPlugin,
        session: &crate::identity::SessionInfo,
        statement: &LazyStatement<'_>,
        columns: &[wit::Column],
    ) -> Result<Option<Arc<[wit::Mask]>>, CallFailure> {
        let Some(index) = self.instance(plugin, session).await? else {
            return Ok(None);
        };
        let plans = match &self.instances[index].1 {
            Instance::Live(live) => live.plans.as_ref(),
            Instance::Inactive => None,
        };
        let key = plans.map(|_| Plans::key(columns));
        if let (Some(plans), Some(key)) = (plans, &key)
            && let Some(masks) = plans.get(key)
        {
            return Ok(Some(masks));
        }
        let Some(live) = self.armed(index, plugin) else {
            return Ok(None);
        };
        let started = Instant::now();
        let outcome = super::call::bounded(
            plugin.limits.timeout,
            live.bindings.sluice_plugin_masking().call_plan(
                &mut live.store,
                statement.get(),
                columns,
            ),
        )
        .await;
        let masks = self.settle(index, plugin, started, outcome)?;
        if masks.len() != columns.len() {
            return Err(CallFailure::Reported(format!(
                "planned {} masks for {} columns",
                masks.len(),
                columns.len()
            )));
        }
        let masks: Arc<[wit::Mask]> = masks.into();
        if let (Some(key), Instance::Live(live)) = (key, &mut self.instances[index].1)
            && let Some(plans) = &mut live.plans
        {
            plans.remember(key, masks.clone());
        }
        Ok(Some(masks))
    }

    /// The plugin's transform of one batch of a `custom` column.
    pub async fn transform(
        &mut self,
        plugin: &MaskingPlugin,
        session: &crate::identity::SessionInfo,
        column: &wit::Column,
        values: &[Option<String>],
    ) -> Result<Vec<Option<String>>, CallFailure> {
        let inactive =
            || CallFailure::Reported("asked to transform in a session it does not mask".into());
        let index = self.instance(plugin, session).await?.ok_or_else(inactive)?;
        let live = self.armed(index, plugin).ok_or_else(inactive)?;
        let started = Instant::now();
        let outcome = super::call::bounded(
            plugin.limits.timeout,
            live.bindings
                .sluice_plugin_masking()
                .call_transform(&mut live.store, column, values),
        )
        .await;
        let out = self.settle(index, plugin, started, outcome)?;
        if out.len() != values.len() {
            return Err(CallFailure::Reported(format!(
                "returned {} values for {}",
                out.len(),
                values.len()
            )));
        }
        Ok(out)
    }

    /// The live instance at `index` (from [`SessionMaskers::instance`]), its deadline set for
    /// one call.
    fn armed(&mut self, index: usize, plugin: &MaskingPlugin) -> Option<&mut Live> {
        let Instance::Live(live) = &mut self.instances[index].1 else {
            return None;
        };
        super::call::arm(&mut live.store, plugin.limits.timeout);
        Some(live)
    }

    /// The index of the plugin's instance, created and opened if needed; `None` if inactive.
    async fn instance(
        &mut self,
        plugin: &MaskingPlugin,
        session: &crate::identity::SessionInfo,
    ) -> Result<Option<usize>, CallFailure> {
        if let Some(index) = self.instances.iter().position(|(id, _)| *id == plugin.id) {
            return Ok(match self.instances[index].1 {
                Instance::Live(_) => Some(index),
                Instance::Inactive => None,
            });
        }
        let host = self.host.clone();
        let instance = instantiate(&host, plugin, session).await?;
        let active = matches!(instance, Instance::Live(_));
        self.instances.push((plugin.id, instance));
        Ok(active.then(|| self.instances.len() - 1))
    }

    /// A call's outcome: its value, or the failure (the instance is discarded after a trap or
    /// an overrun, and counted).
    fn settle<T>(
        &mut self,
        index: usize,
        plugin: &MaskingPlugin,
        started: Instant,
        outcome: wasmtime::Result<Result<T, wit::Error>>,
    ) -> Result<T, CallFailure> {
        let took = started.elapsed();
        if let Instance::Live(live) = &self.instances[index].1
            && let Some(histogram) = &live.call_seconds
        {
            histogram.observe(took.as_secs_f64());
        }
        let overran = took > plugin.limits.timeout * 2 + Duration::from_millis(5);
        let failure = match outcome {
            Err(trap) => classify_trap(&trap, plugin.limits.timeout),
            Ok(_) if overran => CallFailure::Timeout(plugin.limits.timeout),
            Ok(Err(reported)) => CallFailure::Reported(reported_message(reported)),
            Ok(Ok(value)) => return Ok(value),
        };
        if !matches!(failure, CallFailure::Reported(_)) {
            self.instances.swap_remove(index);
        }
        count_failure(&self.host, &plugin.name, &failure);
        Err(failure)
    }
}

async fn instantiate(
    host: &PluginHost,
    plugin: &MaskingPlugin,
    session: &crate::identity::SessionInfo,
) -> Result<Instance, CallFailure> {
    let mut store = host.sandbox(plugin, 5);
    let budget = plugin.limits.timeout * 5;
    let (bindings, reuse) = super::call::bounded(budget, plugin.pre.instantiate_async(&mut store))
        .await
        .map_err(|e| CallFailure::Instantiate(format!("{e:#}")))?;
    let opened = super::call::bounded(
        budget,
        bindings
            .sluice_plugin_masking()
            .call_open(&mut store, &super::convert::session(session)),
    )
    .await;
    match opened {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return Ok(Instance::Inactive),
        Ok(Err(reported)) => return Err(CallFailure::Reported(reported_message(reported))),
        Err(trap) => return Err(classify_trap(&trap, plugin.limits.timeout)),
    }
    let scope = match reuse {
        Some(reuse) => super::call::bounded(plugin.limits.timeout, reuse.call_scope(&mut store))
            .await
            .map_err(|trap| classify_trap(&trap, plugin.limits.timeout))?,
        None => ReuseScope::EveryResult,
    };
    Ok(Instance::Live(Box::new(Live {
        store,
        bindings,
        plans: matches!(scope, ReuseScope::SameColumns).then(Plans::default),
        call_seconds: host.metrics().map(|m| m.plugin_calls(&plugin.name)),
    })))
}
