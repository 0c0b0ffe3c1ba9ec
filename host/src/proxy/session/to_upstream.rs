//! The client → upstream direction of a session: every message the client sends goes through
//! the gate, and what the client has already sent goes upstream in one write.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::end::SessionEnd;
use super::woken::Alarm;
use crate::proxy::gate::Gate;
use crate::wire::frame::{FrameError, FrameReader, FrameWriter};

/// Message types a client may send after login: simple query, extended query, COPY
/// sub-protocol, function call, Terminate. The frame reader refuses anything else on its type
/// byte.
pub(crate) fn client_may_send(tag: u8) -> bool {
    matches!(
        tag,
        b'Q' | b'P' | b'B' | b'D' | b'E' | b'S' | b'H' | b'C' | b'd' | b'c' | b'f' | b'F' | b'X'
    )
}

/// What the client direction needs to tell an idle session from one waiting on a statement.
#[derive(Clone, Copy)]
pub(crate) struct Idle<'a> {
    /// Zero: never time out.
    pub timeout: Duration,
    /// ReadyForQuery messages relayed to the client so far: the upstream's position in the
    /// client's request stream.
    pub cycles_done: &'a AtomicU64,
}

pub(crate) async fn client_to_upstream<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    client: &mut FrameReader<R>,
    upstream: &mut FrameWriter<W>,
    gate: &mut Gate,
    idle: Idle<'_>,
    alarms: &[Alarm],
) -> SessionEnd {
    // One timer for the session, moved on only when it fires: a timer armed and dropped
    // around every read cost two trips through the runtime's timer wheel per statement.
    let mut idle_timer = pin!(tokio::time::sleep(idle.timeout));
    loop {
        let read = if idle.timeout.is_zero() {
            client.next().await
        } else {
            let mut waiting_since = Instant::now();
            loop {
                // Reading is cancel-safe: bytes already read stay in the reader's buffer.
                tokio::select! {
                    biased;
                    read = client.next() => break read,
                    () = &mut idle_timer => {
                        let now = Instant::now();
                        let due = later(waiting_since, idle.timeout);
                        if now < due {
                            idle_timer.as_mut().reset(due);
                            continue;
                        }
                        if gate.at_rest(idle.cycles_done.load(Ordering::Relaxed)) {
                            tracing::info!(timeout = ?idle.timeout, "idle session closed");
                            return SessionEnd::IdleTimeout;
                        }
                        // Waiting on a statement is not idle: another whole period from now.
                        waiting_since = now;
                        idle_timer.as_mut().reset(later(now, idle.timeout));
                    }
                }
            }
        };
        let mut next = match read {
            Ok(Some(frame)) => Some(frame),
            Ok(None) => return SessionEnd::ClientDisconnected,
            Err(e) => return client_error(e),
        };
        // Everything the client has already sent goes upstream in one write.
        while let Some(frame) = next {
            // Not relayed: the session's end decides whether the upstream connection closes
            // or is kept warm.
            if frame.tag() == b'X' {
                if let Err(e) = upstream.flush().await {
                    return SessionEnd::UpstreamIo(e);
                }
                return SessionEnd::ClientTerminated;
            }
            if alarms.iter().any(Alarm::rang) {
                // The token was revoked or expired, or the gateway is shutting down: the
                // session's select sees it before this statement goes through (and, if it
                // was another token's revocation, lets the relay go on).
                tokio::task::yield_now().await;
            }
            if let Err(why) = gate.process(&frame, upstream, client).await {
                return SessionEnd::ClientProtocol(why);
            }
            if upstream.wants_flush()
                && let Err(e) = upstream.flush().await
            {
                return SessionEnd::UpstreamIo(e);
            }
            next = match client.try_next() {
                Ok(frame) => frame,
                Err(e) => return client_error(e),
            };
        }
        if let Err(e) = upstream.flush().await {
            return SessionEnd::UpstreamIo(e);
        }
    }
}

/// `period` after `from`; a configured timeout too long to add ends 30 years on, as tokio's
/// own `sleep` has it.
fn later(from: Instant, period: Duration) -> Instant {
    from.checked_add(period)
        .unwrap_or_else(|| from + Duration::from_secs(30 * 365 * 86_400))
}

fn client_error(e: FrameError) -> SessionEnd {
    match e {
        // Clients routinely close TLS connections without close_notify after Terminate or
        // when they are killed; that is a disconnect, not a fault.
        FrameError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            SessionEnd::ClientDisconnected
        }
        FrameError::Io(e) => SessionEnd::ClientIo(e),
        FrameError::Truncated => SessionEnd::ClientDisconnected,
        FrameError::UnexpectedType(tag) => {
            SessionEnd::ClientProtocol(format!("unexpected message type {tag:?} from client"))
        }
        other => SessionEnd::ClientProtocol(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::{Pin, pin};
    use std::task::{Context, Poll, Waker};

    use bytes::BytesMut;

    use super::*;
    use crate::proxy::fuzzing::{Fixture, session_info};
    use crate::proxy::session::parts::Parts;
    use crate::proxy::session::woken::WhenWoken;

    fn queries(texts: &[&str]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for text in texts {
            postgres_protocol::message::frontend::query(text, &mut out).unwrap();
        }
        out.to_vec()
    }

    /// Relays three statements the client sent at once (all already read), beside a rare
    /// event that woke once (a revocation, say) if `rang`; the session looks at the event only
    /// when the relay's first poll returns. Returns whether that first poll was pending, and
    /// the bytes that went upstream by the end.
    fn relay_with_alarm(rang: bool) -> (bool, Vec<u8>) {
        let fixture = Fixture::new(None);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let Parts {
                mut gate, progress, ..
            } = Parts::new(fixture.shared(), session_info("agent"), Default::default());
            let sent = queries(&["SELECT 1", "SELECT 2", "SELECT 3"]);
            let mut client = FrameReader::new(&sent[..], 1 << 16).accepting(client_may_send);
            let mut upstream = FrameWriter::new(Vec::new());
            let mut woke = !rang;
            let mut rare = WhenWoken::new(std::future::poll_fn(move |cx| {
                if !std::mem::replace(&mut woke, true) {
                    cx.waker().wake_by_ref();
                }
                Poll::<()>::Pending
            }));
            let alarms = [rare.alarm()];
            let mut cx = Context::from_waker(Waker::noop());
            assert!(Pin::new(&mut rare).poll(&mut cx).is_pending());
            assert_eq!(alarms[0].rang(), rang);
            let idle = Idle {
                timeout: Duration::ZERO,
                cycles_done: &progress.done,
            };
            let first_pending = {
                let mut relay = pin!(client_to_upstream(
                    &mut client,
                    &mut upstream,
                    &mut gate,
                    idle,
                    &alarms
                ));
                let first = relay.as_mut().poll(&mut cx);
                let first_pending = first.is_pending();
                // The session looks: the event is not ready, and the relay goes on.
                assert!(Pin::new(&mut rare).poll(&mut cx).is_pending());
                assert!(!alarms[0].rang());
                let end = match first {
                    Poll::Ready(end) => end,
                    Poll::Pending => std::future::poll_fn(|cx| relay.as_mut().poll(cx)).await,
                };
                assert!(matches!(end, SessionEnd::ClientDisconnected), "{end:?}");
                first_pending
            };
            (first_pending, upstream.into_inner())
        })
    }

    #[test]
    fn a_relay_whose_alarm_rang_lets_the_session_look_before_the_next_statement() {
        let (pending, upstream) = relay_with_alarm(true);
        assert!(
            pending,
            "the relay yielded to the session before any statement"
        );
        assert_eq!(upstream, queries(&["SELECT 1", "SELECT 2", "SELECT 3"]));
        // Without the alarm the same relay runs the burst through in one poll.
        let (pending, upstream) = relay_with_alarm(false);
        assert!(!pending);
        assert_eq!(upstream, queries(&["SELECT 1", "SELECT 2", "SELECT 3"]));
    }
}
