//! Host bindings of the WIT contract. One module per contract version; today only 0.1.0.

pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "policy-plugin",
        exports: { default: async },
    });
}
