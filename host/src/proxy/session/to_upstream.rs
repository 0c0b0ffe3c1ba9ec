//! The client → upstream direction of a session: every message the client sends goes through
//! the gate, and what the client has already sent goes upstream in one write.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::end::SessionEnd;
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
                        if now < waiting_since + idle.timeout {
                            idle_timer.as_mut().reset(waiting_since + idle.timeout);
                            continue;
                        }
                        if gate.at_rest(idle.cycles_done.load(Ordering::Relaxed)) {
                            tracing::info!(timeout = ?idle.timeout, "idle session closed");
                            return SessionEnd::IdleTimeout;
                        }
                        // Waiting on a statement is not idle: another whole period from now.
                        waiting_since = now;
                        idle_timer.as_mut().reset(now + idle.timeout);
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
