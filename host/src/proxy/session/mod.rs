//! A logged-in session: messages relayed both ways until either side leaves, the token
//! expires or the gateway shuts down. Both directions run concurrently (`to_upstream.rs`,
//! `to_client.rs`) so that a client that pipelines without reading, or a server streaming a
//! large result, never deadlocks the relay.

mod end;
mod parts;
pub(super) mod progress;
pub(super) mod read_only;
pub(super) mod reading;
pub(super) mod runaway;
mod to_client;
mod to_upstream;
mod woken;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use super::login::Established;
use super::shared::Shared;
use crate::identity::SessionInfo;
use crate::wire::frame::{FrameReader, FrameWriter};
use crate::wire::stall::StallWatch;
pub use end::SessionEnd;
pub(super) use parts::Parts;
pub(super) use to_client::{Relayed, upstream_may_send, upstream_to_client};
pub(super) use to_upstream::{Idle, client_may_send, client_to_upstream};
use woken::WhenWoken;

/// Runs the session; returns why it ended and how many statement texts it judged.
pub async fn run(
    shared: &Arc<Shared>,
    established: Established,
    info: SessionInfo,
) -> (SessionEnd, u64) {
    let Established {
        client,
        grant,
        upstream,
        cancel_key,
        subject_slot,
        ..
    } = established;
    let (client_stream, client_buffered) = client.into_parts();
    let (client_read, client_write) = tokio::io::split(client_stream);
    // The rest of `upstream` goes with its stream if the connection is kept warm.
    let crate::upstream::UpstreamSession {
        stream: upstream_stream,
        buffered: upstream_buffered,
        ..
    } = upstream;
    let (backend_pid, backend_secret) = (upstream.backend_pid, upstream.backend_secret);
    let (up_read, up_write) = tokio::io::split(upstream_stream);
    let max = shared.config.server.max_message_size;
    let max_upstream = shared.config.server.max_upstream_message_size;
    let mut client_in =
        FrameReader::with_buffer(client_read, client_buffered, max).accepting(client_may_send);
    let mut client_out = FrameWriter::new(client_write).watching(StallWatch::new(
        shared.config.server.client_write_stall,
        shared.metrics.clone(),
    ));
    let mut up_in = FrameReader::with_buffer(up_read, upstream_buffered, max_upstream)
        .accepting(upstream_may_send);
    let mut up_out = FrameWriter::new(up_write);

    let expires_in = grant
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let expiry = tokio::time::sleep_until((Instant::now() + expires_in).into());

    let upstream_db = shared.upstreams.get(&info.database).cloned();
    let info_read_only = info.read_only;
    let budget = upstream_db
        .as_ref()
        .map_or(Duration::ZERO, |u| u.statement_timeout());
    let Parts {
        mut gate,
        mut answers,
        notices: mut notices_in,
        results,
        mut masker,
        progress,
    } = Parts::new(shared, info, cancel_key.cancelled.clone());
    let idle = Idle {
        timeout: shared.config.server.idle_timeout,
        cycles_done: &progress.done,
    };
    // The rare events first: when one is ready it ends the session, and the relay lets the
    // session look (`alarms`) before each statement it takes from the client. Each is polled
    // only when it woke (`woken.rs`).
    let expiry = WhenWoken::new(expiry);
    let revoked = WhenWoken::new(shared.revocations.until_revoked(&grant));
    let shutdown = WhenWoken::new(shared.terminate.cancelled());
    let runaway = WhenWoken::new(runaway::watch(
        budget + shared.config.limits.statement_timeout_grace,
        &progress.sent,
        &progress.done,
        || async {
            cancel_key.forwarding();
            if let Some(db) = &upstream_db
                && let Err(e) = db.cancel(backend_pid, backend_secret).await
            {
                tracing::warn!(error = %e, "cancelling a runaway statement failed");
            }
        },
    ));
    let alarms = [revoked.alarm(), expiry.alarm(), shutdown.alarm()];
    // The two directions in turn, neither first every time: a client that never stops
    // sending must not keep its own answers from being relayed.
    let relay = async {
        tokio::select! {
            end = client_to_upstream(&mut client_in, &mut up_out, &mut gate, idle, &alarms) => end,
            end = upstream_to_client(&mut up_in, &mut client_out, Relayed { answers: &mut answers, progress: &progress, read_only: info_read_only }, &mut notices_in, results.as_ref(), masker.as_mut()) => end,
        }
    };
    let end = tokio::select! {
        biased;
        revocation = revoked => {
            tracing::warn!(revocation = %revocation.id, "session ended: its token was revoked");
            shared.metrics.sessions_revoked.inc();
            SessionEnd::Revoked { id: revocation.id, reason: revocation.reason }
        }
        () = expiry => SessionEnd::TokenExpired,
        () = shutdown => SessionEnd::Shutdown,
        () = runaway, if !budget.is_zero() => unreachable!("the runaway watch never ends"),
        end = relay => end,
    };
    let cancel_forwarded = cancel_key.retire();
    drop(subject_slot);

    let at_rest = end.client_left()
        && !cancel_forwarded
        && gate.at_rest(progress.done.load(Ordering::Acquire))
        && progress.status.load(Ordering::Acquire) == b'I'
        && !progress.copy_in.load(Ordering::Acquire);
    if at_rest
        && let Some(db) = &upstream_db
        && up_out.is_settled()
    {
        let (up_read, buffered) = up_in.into_parts();
        let session = crate::upstream::UpstreamSession {
            stream: up_read.unsplit(up_out.into_inner()),
            buffered,
            ..upstream
        };
        // Handed back before the client's close, which a client that stops reading can hold.
        tokio::spawn(db.warm().clone().give_back(session));
        client_out.close_with(None).await;
        return (end, gate.statements());
    }

    let (to_client, to_upstream) = end.farewell();
    tokio::join!(
        client_out.close_with(to_client.as_deref()),
        up_out.close_with(to_upstream.as_deref()),
    );
    (end, gate.statements())
}
