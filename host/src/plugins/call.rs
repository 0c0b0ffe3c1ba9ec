//! Bounding a plugin call: the epoch deadline that interrupts wasm code (and lets a long call
//! yield to the worker thread's other sessions), and the wall-clock bound for a call blocked in
//! a host import.

use std::time::Duration;

use super::state::PluginState;

/// Epoch tick: a call's deadline is checked, and a long call yields, once per tick (a 20 ms
/// timeout stops within 20–25 ms). A finer tick costs an idle gateway a thread wakeup every
/// millisecond.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Arms `store` for a call that may take `budget`: at every epoch tick the call either yields
/// to the runtime (so the worker thread's other sessions go on while a slow plugin runs) or,
/// past the deadline, is interrupted wherever its wasm code is.
pub(crate) fn arm(store: &mut wasmtime::Store<PluginState>, budget: Duration) {
    store.data_mut().deadline = std::time::Instant::now() + budget;
    store.set_epoch_deadline(1);
}

/// `call` bounded in wall time by `budget` (with one tick of slack and as much again for the
/// host's side): the epoch deadline cannot stop a plugin blocked in a host call (a WASI sleep
/// or poll), so the call is dropped there and reported as an interrupt. The caller discards
/// the instance, as after any trap.
pub(crate) async fn bounded<T>(
    budget: Duration,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    match tokio::time::timeout(budget * 2 + EPOCH_TICK, call).await {
        Ok(outcome) => outcome,
        Err(_) => Err(wasmtime::Error::new(wasmtime::Trap::Interrupt)),
    }
}
