//! Hot reload: a file watcher on the plugin directory, debounced so that a file written in
//! several steps is read once it is complete, plus an explicit trigger (SIGHUP).

use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::host::PluginHost;

/// Keeps the watcher alive; `trigger` asks for a reload (SIGHUP does).
pub struct WatchHandle {
    _watcher: Option<notify::RecommendedWatcher>,
    tx: mpsc::UnboundedSender<()>,
}

impl WatchHandle {
    pub fn trigger(&self) {
        let _ = self.tx.send(());
    }
}

/// Watches the host's plugin directory and reloads `debounce` after the last change.
pub fn watch(host: Arc<PluginHost>, debounce: Duration) -> Result<WatchHandle, notify::Error> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let watcher = match host.dir() {
        Some(dir) => {
            let events = tx.clone();
            let mut watcher =
                notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                    if event.is_ok_and(|e| !e.kind.is_access()) {
                        let _ = events.send(());
                    }
                })?;
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
            Some(watcher)
        }
        None => None,
    };
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Wait until the directory has been quiet for `debounce`.
            loop {
                match tokio::time::timeout(debounce, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let host = host.clone();
            let result = tokio::task::spawn_blocking(move || host.reload()).await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "plugin reload failed"),
                Err(e) => tracing::error!(error = %e, "plugin reload panicked"),
            }
        }
    });
    Ok(WatchHandle {
        _watcher: watcher,
        tx,
    })
}
