//! Host bindings of the WIT contract. One module per contract version; today only 0.1.0.
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
}
