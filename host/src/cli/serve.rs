use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use sluice::admin::{self, AdminState};
use sluice::config::Config;
use sluice::proxy::{Gateway, Shared};
use sluice::services::Services;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives while the listeners start must not kill the
    // process with the default action.
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let config = Config::load(config_path)?;
    super::fd_limit::raise_for(config.server.max_connections);
    let grace = config.server.shutdown_grace;
    let admin_listen = config.admin.listen;
    let services = Services::build(config).context("starting the gateway")?;
    let admin_state = Arc::new(AdminState::for_services(&services));
    let mcp = services.config.mcp.clone();
    let verifiers = sluice::mcp::GatewayParts::of(&services);
    let gateway = Gateway::start(Shared::from_services(services)).await?;

    let admin_stop = CancellationToken::new();
    if let Some(addr) = admin_listen {
        admin::serve(addr, admin_state.clone(), admin_stop.clone())
            .await
            .with_context(|| format!("admin listener on {addr}"))?;
    }
    if let Some(addr) = mcp.listen {
        let state = sluice::mcp::McpState::new(&mcp, addr, verifiers, gateway.local_door());
        sluice::mcp::serve(addr, Arc::new(state), admin_stop.clone())
            .await
            .with_context(|| format!("MCP listener on {addr}"))?;
    }

    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: draining"); break }
            _ = int.recv() => { tracing::info!("SIGINT: draining"); break }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading plugins");
                gateway.reload_plugins();
            }
        }
    }
    admin_state.accepting.store(false, Ordering::Relaxed);
    tokio::select! {
        () = gateway.shutdown(grace) => {}
        _ = term.recv() => tracing::warn!("second signal: closing sessions now"),
        _ = int.recv() => tracing::warn!("second signal: closing sessions now"),
    }
    admin_stop.cancel();
    drop(gateway);
    Ok(())
}
