//! Sluice: a just-in-time access gateway for Postgres. Clients log in with short-lived tokens;
//! the gateway holds the real database credentials and relays the Postgres protocol.

pub mod access;
pub mod admin;
pub mod analysis;
pub mod approvals;
pub mod audit;
pub mod catalog;
pub mod config;
pub mod display;
pub mod identity;
pub mod localpg;
pub mod masking;
pub mod mcp;
pub mod metrics;
pub mod plugins;
pub mod policy;
pub mod proxy;
pub mod revocations;
pub mod secret;
pub mod services;
pub mod state;
pub mod tls;
pub mod upstream;
pub mod web;
pub mod wire;
