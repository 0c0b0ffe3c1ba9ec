//! End-to-end scenarios against a real gateway, Postgres and clients, one module per subject.
//!
//! They share one test binary (and so one test Postgres) because each binary links the whole
//! gateway, wasmtime and cranelift included: fourteen binaries took over a gigabyte of disk and
//! most of the test build's link time. Scenarios that measure this process's own memory
//! (`large_result`, `masking_memory`) or raise its limits to hold a thousand sessions (`load`)
//! stay in binaries of their own. Run one subject with `cargo test --test gateway audit::`.

mod access_plugins;
mod approval_binding;
mod approval_routing;
mod approvals;
mod approver_sign_in;
mod audit;
mod demo;
mod direct_login;
mod docs;
mod hidden_writes;
mod hostile_upstream;
mod layout;
mod limits;
mod login;
mod masking;
mod masking_exits;
mod masking_reuse;
mod mcp;
mod mcp_door;
mod metrics;
mod one_reading;
mod plugin_contract;
mod plugin_directory;
mod plugin_faults;
mod plugin_reload;
mod policy;
mod read_only;
mod relay;
mod revocation;
mod robustness;
mod role_mapping;
mod runaway;
mod tls_streaming;
mod token_exchange;
mod upstream;
mod warm_upstream;
