//! A masking plugin ready to instantiate: its `masking-plugin` exports and, when the component
//! has it, the optional `masking-reuse` export (0.1.3). A component built against 0.1.2 or
//! before has none, and its plans are asked for every result set.

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::v0_1::masking::{
    MaskingPlugin as MaskingBindings, MaskingPluginIndices as MaskingIndices,
};
use super::bindings::v0_1::masking_reuse::exports::sluice::plugin::masking_reuse::{
    Guest as ReuseGuest, GuestIndices as ReuseIndices,
};
use super::state::PluginState;

/// The exports a masking plugin's instances are driven through.
pub struct MaskingPre {
    instance_pre: InstancePre<PluginState>,
    masking: MaskingIndices,
    reuse: Option<ReuseIndices>,
}

impl MaskingPre {
    /// Fails when the component lacks the masking exports, or has a `masking-reuse` export
    /// without its function: a load error naming it, never a silent `every-result`.
    pub fn new(instance_pre: InstancePre<PluginState>) -> wasmtime::Result<MaskingPre> {
        let component = instance_pre.component();
        let reusable = component
            .component_type()
            .exports(component.engine())
            .any(|(name, _)| name.starts_with("sluice:plugin/masking-reuse@"));
        Ok(MaskingPre {
            masking: MaskingIndices::new(&instance_pre)?,
            reuse: if reusable {
                Some(ReuseIndices::new(&instance_pre)?)
            } else {
                None
            },
            instance_pre,
        })
    }

    /// An instance's masking bindings, and its `masking-reuse` export if it has one (a
    /// mistyped one fails the instantiation, and so the plugin's load).
    pub async fn instantiate_async(
        &self,
        store: &mut Store<PluginState>,
    ) -> wasmtime::Result<(MaskingBindings, Option<ReuseGuest>)> {
        let instance = self.instance_pre.instantiate_async(&mut *store).await?;
        let masking = self.masking.load(&mut *store, &instance)?;
        let reuse = match &self.reuse {
            Some(indices) => Some(indices.load(&mut *store, &instance)?),
            None => None,
        };
        Ok((masking, reuse))
    }
}
