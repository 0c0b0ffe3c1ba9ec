//! Futures polled only when their own waker fired. A session waits on rare events beside its
//! relay — its token's expiry or revocation, the gateway's shutdown, a runaway statement — in
//! one `select!`, and `select!` polls every branch whenever the task wakes: twice per relayed
//! round trip. Polling a waiting `Notify` takes its waiter lock, and the shutdown token's and
//! the revocations' are shared by every session on every thread, so each statement bounced
//! their cache lines between cores for events that almost never come. Wrapped, such a future
//! costs one atomic swap per wake of the session until something it waits on happens.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// `inner`, polled on its first poll and then only after it asked to be woken. Not to be
/// polled again once it returned Ready (as `select!` never does).
pub struct WhenWoken<F> {
    inner: Pin<Box<F>>,
    signal: Arc<Signal>,
    /// Handed to `inner`: marks the signal, then wakes the session's task.
    waker: Waker,
    polled: bool,
}

struct Signal {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Whether a [`WhenWoken`] future woke and has not been polled since. Within one poll of a
/// session its relay can go through many statements a client sent at once; checking this
/// between them lets the session see a revocation (or its expiry, or shutdown) before the
/// next statement goes through.
#[derive(Clone)]
pub struct Alarm(Arc<Signal>);

impl Alarm {
    pub fn rang(&self) -> bool {
        self.0.woken.load(Ordering::Acquire)
    }
}

impl<F: Future> WhenWoken<F> {
    pub fn alarm(&self) -> Alarm {
        Alarm(self.signal.clone())
    }

    pub fn new(inner: F) -> WhenWoken<F> {
        let signal = Arc::new(Signal {
            woken: AtomicBool::new(false),
            task: AtomicWaker::new(),
        });
        WhenWoken {
            inner: Box::pin(inner),
            waker: Waker::from(signal.clone()),
            signal,
            polled: false,
        }
    }
}

impl<F: Future> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // Registered before the flag is read: a wake after the read wakes this task again.
        this.signal.task.register(cx.waker());
        if !this.signal.woken.swap(false, Ordering::AcqRel) && this.polled {
            return Poll::Pending;
        }
        this.polled = true;
        this.inner
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[tokio::test]
    async fn a_wrapped_future_is_polled_again_only_after_its_own_wake() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(tokio::sync::Notify::new());
        let (counted, waited) = (polls.clone(), ready.clone());
        // A rare event: counts every poll it gets.
        let rare = WhenWoken::new(async move {
            let notified = waited.notified();
            tokio::pin!(notified);
            std::future::poll_fn(|cx| {
                counted.fetch_add(1, Ordering::Relaxed);
                notified.as_mut().poll(cx)
            })
            .await;
            "happened"
        });
        tokio::pin!(rare);
        // The task wakes many times for other reasons (a busy relay beside it).
        let (busy_tx, mut busy_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let relay = tokio::spawn(async move {
            for _ in 0..100 {
                busy_tx.send(()).unwrap();
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            ready.notify_one();
        });
        let mut relayed = 0;
        let outcome = loop {
            tokio::select! {
                biased;
                outcome = &mut rare => break outcome,
                Some(()) = busy_rx.recv() => relayed += 1,
            }
        };
        relay.await.unwrap();
        assert_eq!(outcome, "happened");
        assert_eq!(relayed, 100);
        // Once when first polled, once when notified: never for the relay's wakes.
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }
}
