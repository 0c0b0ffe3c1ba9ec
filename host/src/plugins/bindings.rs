//! Host bindings of the WIT contract. One module per incompatible contract version; today
//! 0.1 (0.1.3; 0.1.1 added the `catalog` import, 0.1.2 the `access` world and 0.1.3 the
//! optional `masking-reuse` export, leaving components built against 0.1.0 loadable: wasmtime
//! matches their exports and imports to 0.1.3 by semver), with one
//! binding per plugin world. The worlds share the `types` and `host` interfaces, generated
//! once (with the policy world) and reused by the others, so every kind of plugin is linked
//! against the same host functions and exchanges the same Rust types.
//!
//! Calls are async only because WASI's host side is: a plugin that writes to stderr (a Rust
//! panic message does) reaches wasmtime-wasi's async stream code, which cannot be driven from
//! a synchronous call on a thread that runs a tokio runtime. The plugin code itself never
//! yields (the epoch deadline traps rather than yields), so a call completes in one poll.

pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "policy-plugin",
        exports: { default: async },
    });

    pub mod approval {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "approval-plugin",
            exports: { default: async },
            with: {
                "sluice:plugin/types": crate::plugins::bindings::v0_1::sluice::plugin::types,
                "sluice:plugin/host": crate::plugins::bindings::v0_1::sluice::plugin::host,
                "sluice:plugin/catalog": crate::plugins::bindings::v0_1::sluice::plugin::catalog,
            },
        });
    }

    pub mod access {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "access-plugin",
            exports: { default: async },
            with: {
                "sluice:plugin/types": crate::plugins::bindings::v0_1::sluice::plugin::types,
                "sluice:plugin/host": crate::plugins::bindings::v0_1::sluice::plugin::host,
                "sluice:plugin/catalog": crate::plugins::bindings::v0_1::sluice::plugin::catalog,
            },
        });
    }

    pub mod masking {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "masking-plugin",
            exports: { default: async },
            with: {
                "sluice:plugin/types": crate::plugins::bindings::v0_1::sluice::plugin::types,
                "sluice:plugin/host": crate::plugins::bindings::v0_1::sluice::plugin::host,
                "sluice:plugin/catalog": crate::plugins::bindings::v0_1::sluice::plugin::catalog,
            },
        });
    }

    /// The optional `masking-reuse` export (0.1.3) of a masking plugin, looked up beside its
    /// `masking-plugin` bindings: only its interface is used from this world.
    pub mod masking_reuse {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "reusable-masking-plugin",
            exports: { default: async },
            with: {
                "sluice:plugin/types": crate::plugins::bindings::v0_1::sluice::plugin::types,
                "sluice:plugin/host": crate::plugins::bindings::v0_1::sluice::plugin::host,
                "sluice:plugin/catalog": crate::plugins::bindings::v0_1::sluice::plugin::catalog,
            },
        });
    }
}
