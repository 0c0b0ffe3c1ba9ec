//! Makes a client that stopped reading visible. A session whose data waits in the gateway for the
//! client to take it looks, from the outside, like any quiet session; an operator chasing a hung
//! job needs to know which side holds the bytes. A write still waiting after `client_write_stall`
//! is logged (with the session's span) and counted, and the gauge of stalled sessions holds it
//! until the write completes or the session ends.
//!
//! The timer is armed only once a write has had to wait for the socket, so the common case (the
//! kernel takes everything at once) costs nothing.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// Watches writes to one client.
#[derive(Clone)]
pub struct StallWatch {
    after: Duration,
    metrics: Arc<Metrics>,
}

impl StallWatch {
    /// `None` when `after` is zero (not watched).
    pub fn new(after: Duration, metrics: Arc<Metrics>) -> Option<StallWatch> {
        (!after.is_zero()).then_some(StallWatch { after, metrics })
    }

    /// Runs `write` (of `buffered` bytes), reporting it if it waits longer than the bound.
    pub async fn watch<F: Future>(&self, write: F, buffered: usize) -> F::Output {
        let mut write = pin!(write);
        let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let mut stall: Option<Stall<'_>> = None;
        let started = Instant::now();
        let output = poll_fn(|cx| {
            if let Poll::Ready(output) = write.as_mut().poll(cx) {
                return Poll::Ready(output);
            }
            if stall.is_none() {
                let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(self.after)));
                if timer.as_mut().poll(cx).is_ready() {
                    stall = Some(Stall::begin(&self.metrics, self.after, buffered));
                }
            }
            Poll::Pending
        })
        .await;
        if stall.is_some() {
            tracing::info!(
                waited = ?started.elapsed(),
                "the client is reading again; the stalled write completed"
            );
        }
        output
    }
}

/// One stalled write: counted in the gauge until dropped, whether the write completes or the
/// session ends under it.
struct Stall<'a> {
    metrics: &'a Metrics,
}

impl<'a> Stall<'a> {
    fn begin(metrics: &'a Metrics, after: Duration, buffered: usize) -> Stall<'a> {
        tracing::warn!(
            waiting = ?after,
            bytes = buffered,
            "the client has not read for client_write_stall while the gateway holds data for it"
        );
        metrics.client_write_stalls.inc();
        metrics.client_writes_stalled.inc();
        Stall { metrics }
    }
}

impl Drop for Stall<'_> {
    fn drop(&mut self) {
        self.metrics.client_writes_stalled.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn watch(after: Duration) -> (StallWatch, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        (StallWatch::new(after, metrics.clone()).unwrap(), metrics)
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_does_not_take_is_counted_until_it_completes() {
        let (watch, metrics) = watch(Duration::from_secs(30));
        let (mut ours, mut peer) = tokio::io::duplex(16);
        let write = tokio::spawn({
            let watch = watch.clone();
            async move { watch.watch(ours.write_all(&[7; 64]), 64).await }
        });
        // The paused clock jumps to the stall bound once every task waits.
        while metrics.client_writes_stalled.get() == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert_eq!(metrics.client_write_stalls.get(), 1);
        let mut taken = vec![0; 64];
        peer.read_exact(&mut taken).await.unwrap();
        write.await.unwrap().unwrap();
        assert_eq!(metrics.client_writes_stalled.get(), 0);
        assert_eq!(metrics.client_write_stalls.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_waits_less_than_the_bound_is_not_a_stall() {
        let (watch, metrics) = watch(Duration::from_secs(30));
        let (mut ours, mut peer) = tokio::io::duplex(16);
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(29)).await;
            let mut taken = vec![0; 64];
            peer.read_exact(&mut taken).await.unwrap();
        });
        watch.watch(ours.write_all(&[7; 64]), 64).await.unwrap();
        reader.await.unwrap();
        assert_eq!(metrics.client_write_stalls.get(), 0);
        assert_eq!(metrics.client_writes_stalled.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_ending_during_a_stall_leaves_the_gauge_at_zero() {
        let (watch, metrics) = watch(Duration::from_secs(1));
        let (mut ours, _peer) = tokio::io::duplex(16);
        let ended = tokio::time::timeout(
            Duration::from_secs(5),
            watch.watch(ours.write_all(&[7; 64]), 64),
        )
        .await;
        assert!(ended.is_err(), "nobody reads: the write cannot complete");
        assert_eq!(metrics.client_write_stalls.get(), 1);
        assert_eq!(metrics.client_writes_stalled.get(), 0);
    }

    #[test]
    fn a_zero_bound_turns_the_watch_off() {
        assert!(StallWatch::new(Duration::ZERO, Arc::new(Metrics::new())).is_none());
    }
}
