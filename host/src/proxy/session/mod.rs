//! A logged-in session: messages relayed both ways until either side leaves, the token
//! expires or the gateway shuts down. Both directions run concurrently so that a client that
//! pipelines without reading, or a server streaming a large result, never deadlocks the relay.

pub(super) mod progress;
pub(super) mod reading;
pub(super) mod runaway;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use std::sync::Arc;

use super::gate::{Gate, HoldSignals, refusal};
use super::login::Established;
use super::masker::{Masker, Relay, Rows};
use super::pipeline::{Answer, Answers, Owner, Request};
use super::shared::Shared;
use super::trail::{Results, Trail};
use crate::identity::SessionInfo;
use crate::wire::backend as messages;
use crate::wire::frame::{FrameError, FrameReader, FrameWriter, messages_of};
use crate::wire::sqlstate;
use crate::wire::stall::StallWatch;
use progress::Progress;

/// Why a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The client sent Terminate.
    ClientTerminated,
    /// The client closed its connection without Terminate.
    ClientDisconnected,
    /// The upstream closed the connection after a FATAL of its own, relayed to the client.
    UpstreamClosed,
    /// The upstream closed the connection without saying why.
    UpstreamVanished,
    TokenExpired,
    Shutdown,
    /// Nothing in flight and nothing from the client for `idle_timeout`.
    IdleTimeout,
    ClientProtocol(String),
    UpstreamProtocol(String),
    ClientIo(std::io::Error),
    UpstreamIo(std::io::Error),
    /// Answers waited for audit records that could not be made durable.
    AuditFailed,
    /// The upstream reported a setting that makes it read statements differently from the
    /// gateway (`reading.rs`).
    ReadingChanged(String),
    /// The upstream sent a message larger than `max_upstream_message_size`.
    UpstreamTooLarge {
        len: usize,
        max: usize,
    },
}

/// Message types a client may send after login: simple query, extended query, COPY
/// sub-protocol, function call, Terminate. The frame reader refuses anything else on its type
/// byte.
pub(super) fn client_may_send(tag: u8) -> bool {
    matches!(
        tag,
        b'Q' | b'P' | b'B' | b'D' | b'E' | b'S' | b'H' | b'C' | b'd' | b'c' | b'f' | b'F' | b'X'
    )
}

/// Backend messages Postgres sends after login. Authentication requests, BackendKeyData and
/// NegotiateProtocolVersion only belong to the login; after it they, like any unknown type,
/// mean a broken or hostile upstream, refused on the type byte.
pub(super) fn upstream_may_send(tag: u8) -> bool {
    matches!(
        tag,
        b'1' | b'2'
            | b'3'
            | b'A'
            | b'C'
            | b'c'
            | b'D'
            | b'd'
            | b'E'
            | b'G'
            | b'H'
            | b'I'
            | b'n'
            | b'N'
            | b's'
            | b'S'
            | b't'
            | b'T'
            | b'V'
            | b'W'
            | b'Z'
    )
}

impl SessionEnd {
    /// A short name for the audit log.
    pub fn class(&self) -> &'static str {
        match self {
            SessionEnd::ClientTerminated => "client_terminated",
            SessionEnd::ClientDisconnected => "client_disconnected",
            SessionEnd::UpstreamClosed => "upstream_closed",
            SessionEnd::UpstreamVanished => "upstream_vanished",
            SessionEnd::TokenExpired => "token_expired",
            SessionEnd::Shutdown => "shutdown",
            SessionEnd::IdleTimeout => "idle_timeout",
            SessionEnd::ClientProtocol(_) => "client_protocol_error",
            SessionEnd::UpstreamProtocol(_) => "upstream_protocol_error",
            SessionEnd::ClientIo(_) => "client_io_error",
            SessionEnd::UpstreamIo(_) => "upstream_io_error",
            SessionEnd::AuditFailed => "audit_failed",
            SessionEnd::ReadingChanged(_) => "reading_changed",
            SessionEnd::UpstreamTooLarge { .. } => "upstream_message_too_large",
        }
    }
}

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
    let (up_read, up_write) = tokio::io::split(upstream.stream);
    let max = shared.config.server.max_message_size;
    let max_upstream = shared.config.server.max_upstream_message_size;
    let mut client_in =
        FrameReader::with_buffer(client_read, client_buffered, max).accepting(client_may_send);
    let mut client_out = FrameWriter::new(client_write).watching(StallWatch::new(
        shared.config.server.client_write_stall,
        shared.metrics.clone(),
    ));
    let mut up_in = FrameReader::with_buffer(up_read, upstream.buffered, max_upstream)
        .accepting(upstream_may_send);
    let mut up_out = FrameWriter::new(up_write);

    let expires_in = grant
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let expiry = tokio::time::sleep_until((Instant::now() + expires_in).into());

    let (requests, mut answers) = super::pipeline::pipeline();
    let (notices, mut notices_in) = mpsc::unbounded_channel();
    let signals = HoldSignals {
        notices,
        cancelled: cancel_key.cancelled.clone(),
    };
    let progress = Arc::new(Progress::default());
    let (trail, mut results) = Trail::new(shared.audit.clone(), info.clone(), progress.clone());
    let (tracker, mut masker) = match super::masker::new(shared, &info) {
        Some((tracker, masker)) => (Some(tracker), Some(masker)),
        None => (None, None),
    };
    let upstream_db = shared.upstreams.get(&info.database).cloned();
    let budget = upstream_db
        .as_ref()
        .map_or(Duration::ZERO, |u| u.statement_timeout());
    let (backend_pid, backend_secret) = (upstream.backend_pid, upstream.backend_secret);
    let mut gate = Gate::new(
        shared.clone(),
        info,
        requests,
        signals,
        trail,
        tracker,
        progress.clone(),
    );
    let idle = Idle {
        timeout: shared.config.server.idle_timeout,
        cycles_done: &progress.done,
    };
    let end = tokio::select! {
        end = client_to_upstream(&mut client_in, &mut up_out, &mut gate, idle) => end,
        end = upstream_to_client(&mut up_in, &mut client_out, Relayed { answers: &mut answers, progress: &progress }, &mut notices_in, results.as_mut(), masker.as_mut()) => end,
        () = runaway::watch(
            budget + shared.config.limits.statement_timeout_grace,
            &progress.sent,
            &progress.done,
            || async {
                if let Some(db) = &upstream_db
                    && let Err(e) = db.cancel(backend_pid, backend_secret).await
                {
                    tracing::warn!(error = %e, "cancelling a runaway statement failed");
                }
            },
        ), if !budget.is_zero() => unreachable!("the runaway watch never ends"),
        () = expiry => SessionEnd::TokenExpired,
        () = shared.terminate.cancelled() => SessionEnd::Shutdown,
    };
    drop(cancel_key);
    drop(subject_slot);

    let to_client = match &end {
        SessionEnd::TokenExpired => Some(messages::fatal(
            sqlstate::INVALID_AUTHORIZATION,
            "terminating connection because the session token expired",
        )),
        SessionEnd::Shutdown => Some(messages::fatal(
            sqlstate::ADMIN_SHUTDOWN,
            "terminating connection because the gateway is shutting down",
        )),
        SessionEnd::IdleTimeout => Some(messages::fatal(
            sqlstate::IDLE_SESSION_TIMEOUT,
            "terminating connection due to idle-session timeout",
        )),
        SessionEnd::ClientProtocol(why) => Some(messages::fatal(sqlstate::PROTOCOL_VIOLATION, why)),
        SessionEnd::AuditFailed => Some(messages::fatal(
            sqlstate::IO_ERROR,
            "terminating connection because the audit log cannot be made durable",
        )),
        SessionEnd::UpstreamTooLarge { len, max } => Some(messages::fatal(
            sqlstate::PROGRAM_LIMIT_EXCEEDED,
            format!(
                "sluice: the database sent a message of {len} bytes, more than server.max_upstream_message_size ({max} bytes); the session ends"
            ),
        )),
        SessionEnd::ReadingChanged(why) => Some(messages::fatal(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("sluice: {why}"),
        )),
        SessionEnd::UpstreamProtocol(_)
        | SessionEnd::UpstreamIo(_)
        | SessionEnd::UpstreamVanished => Some(messages::fatal(
            sqlstate::CONNECTION_FAILURE,
            "terminating connection because the upstream connection failed",
        )),
        _ => None,
    };
    let to_upstream = match &end {
        SessionEnd::ClientTerminated
        | SessionEnd::UpstreamClosed
        | SessionEnd::UpstreamVanished => None,
        _ => Some(messages::terminate()),
    };
    tokio::join!(
        client_out.close_with(to_client.as_deref()),
        up_out.close_with(to_upstream.as_deref()),
    );
    (end, gate.statements())
}

/// What the client direction needs to tell an idle session from one waiting on a statement.
#[derive(Clone, Copy)]
pub(super) struct Idle<'a> {
    /// Zero: never time out.
    pub timeout: Duration,
    /// ReadyForQuery messages relayed to the client so far: the upstream's position in the
    /// client's request stream.
    pub cycles_done: &'a AtomicU64,
}

pub(super) async fn client_to_upstream<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    client: &mut FrameReader<R>,
    upstream: &mut FrameWriter<W>,
    gate: &mut Gate,
    idle: Idle<'_>,
) -> SessionEnd {
    loop {
        let read = if idle.timeout.is_zero() {
            client.next().await
        } else {
            // Reading is cancel-safe: bytes already read stay in the reader's buffer.
            match tokio::time::timeout(idle.timeout, client.next()).await {
                Ok(read) => read,
                Err(_) => {
                    if gate.at_rest(idle.cycles_done.load(Ordering::Relaxed)) {
                        tracing::info!(timeout = ?idle.timeout, "idle session closed");
                        return SessionEnd::IdleTimeout;
                    }
                    continue;
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
            if frame.tag() == b'X' {
                upstream.queue(frame.raw());
                let _ = upstream.flush().await;
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

/// What the upstream direction shares with the client direction while it relays.
pub(super) struct Relayed<'a> {
    /// Which request each answer belongs to.
    pub answers: &'a mut Answers,
    pub progress: &'a Progress,
}

pub(super) async fn upstream_to_client<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    upstream: &mut FrameReader<R>,
    client: &mut FrameWriter<W>,
    relayed: Relayed<'_>,
    notices: &mut mpsc::UnboundedReceiver<Bytes>,
    mut results: Option<&mut Results>,
    mut masker: Option<&mut Masker>,
) -> SessionEnd {
    let Relayed { answers, progress } = relayed;
    let (cycles_done, copy_in) = (&progress.done, &progress.copy_in);
    // An ErrorResponse in the request cycle being answered.
    let mut cycle_failed = false;
    // Whether the last message relayed was a FATAL: then a close is the upstream's own,
    // explained, ending (admin shutdown, its idle timeout...).
    let mut said_fatal = false;
    // Rows are queued for the client: they wait for their statements' audit records.
    let mut rows_queued = false;
    loop {
        let read = tokio::select! {
            read = upstream.next() => read,
            // The gateway's own notices (a statement held for approval) go out between
            // relayed messages.
            Some(notice) = notices.recv() => {
                client.queue(&notice);
                if let Err(e) = client.flush().await {
                    return SessionEnd::ClientIo(e);
                }
                continue;
            }
        };
        let mut next = match read {
            Ok(Some(frame)) => Some(frame),
            Ok(None) if said_fatal => return SessionEnd::UpstreamClosed,
            Ok(None) => return SessionEnd::UpstreamVanished,
            Err(FrameError::Io(e)) => return SessionEnd::UpstreamIo(e),
            Err(e) => return upstream_error(e),
        };
        while let Some(frame) = next {
            if frame.tag() == b'S'
                && let Some(why) = reading_changed(frame.body())
            {
                tracing::warn!(reason = %why, "session ended: the upstream reads statements differently now");
                return SessionEnd::ReadingChanged(why);
            }
            let answer = answers.answer(frame.tag(), frame.body());
            match &answer {
                Answer::Unmatched(unmatched) => {
                    tracing::error!(%unmatched, "session ended: an answer matches no request");
                    return SessionEnd::UpstreamProtocol(unmatched.to_string());
                }
                // Set before the client can see it: its CopyData follows the CopyInResponse.
                Answer::Within(_) if frame.tag() == b'G' => {
                    copy_in.store(true, Ordering::Release);
                    progress.answered.notify_waiters();
                }
                Answer::Failed { .. } => {
                    cycle_failed = true;
                    progress.cycle_failing.store(true, Ordering::Release);
                    progress.answered.notify_waiters();
                }
                Answer::Ready { status, .. } => {
                    progress.cycle_failing.store(false, Ordering::Release);
                    if cycle_failed && progress.forgets_pending.load(Ordering::Acquire) {
                        let answered = cycles_done.load(Ordering::Relaxed);
                        if let Ok(mut failed) = progress.failed_cycles.lock() {
                            failed.push(answered);
                        }
                    }
                    cycle_failed = false;
                    progress.status.store(*status, Ordering::Release);
                }
                _ => {}
            }
            said_fatal = frame.tag() == b'E' && is_fatal(frame.body());
            rows_queued |= frame.tag() == b'D';
            if let Some(results) = results.as_deref() {
                results.answered(frame.tag(), frame.body(), &answer);
            }
            // The failure of a refused message's substitute becomes the gateway's refusal.
            let refused = match &answer {
                Answer::Failed {
                    owner:
                        Some(Owner {
                            request: Request::Refused(refused),
                            ..
                        }),
                    ..
                } => {
                    let rewritten = refusal::rewrite(refused, frame.body()).cloned();
                    if rewritten.is_none() {
                        tracing::warn!("a refused message's substitute failed with another error");
                    }
                    rewritten
                }
                _ => None,
            };
            let relay = match masker.as_deref_mut() {
                Some(m) => match &refused {
                    Some(_) => {
                        m.idle(client).await;
                        m.failed();
                        Relay::Pass
                    }
                    None => m.relay(&frame, &answer, client).await,
                },
                None => Relay::Pass,
            };
            match (frame.tag(), relay, refused) {
                (b'E', _, Some(replacement)) => client.queue(&replacement),
                (b'Z', _, _) => {
                    // This direction is the only writer.
                    let done = cycles_done.load(Ordering::Relaxed);
                    cycles_done.store(done + 1, Ordering::Release);
                    progress.answered.notify_waiters();
                    client.queue(frame.raw());
                }
                (_, Relay::Pass, _) => client.queue(frame.raw()),
                (_, Relay::Replace(replacement), _) => client.queue(&replacement),
                (_, Relay::Drop, _) => {}
            }
            if relay_rows(upstream, client, answers, masker.as_deref()) > 0 {
                said_fatal = false;
                rows_queued = true;
            }
            if client.wants_flush() {
                if rows_queued && let Some(end) = answerable(results.as_deref_mut()).await {
                    return end;
                }
                rows_queued = false;
                if let Err(e) = client.flush().await {
                    return SessionEnd::ClientIo(e);
                }
            }
            next = match upstream.try_next() {
                Ok(frame) => frame,
                Err(e) => return upstream_error(e),
            };
        }
        // The upstream paused: rows held for a batched transform go out now.
        if let Some(m) = masker.as_deref_mut() {
            m.idle(client).await;
        }
        if rows_queued && let Some(end) = answerable(results.as_deref_mut()).await {
            return end;
        }
        rows_queued = false;
        if let Err(e) = client.flush().await {
            return SessionEnd::ClientIo(e);
        }
    }
}

/// Waits until the rows queued for the client may go (their statements' audit records are on
/// disk, with fsync durability); `Some` ends the session when they never will be.
async fn answerable(results: Option<&mut Results>) -> Option<SessionEnd> {
    let results = results?;
    match results.answerable().await {
        Ok(()) => None,
        Err(e) => {
            tracing::error!(error = %e, "answers withheld: their audit records are not durable");
            Some(SessionEnd::AuditFailed)
        }
    }
}

/// DataRows already buffered go to the client without a frame each: copied as one run when
/// nothing masks them, rewritten by the current plan otherwise. Only rows of the result being
/// answered take this path; a row the masker must see itself (the first of an Execute, which
/// makes its plan; rows for a batched transform), or one no request owes, is left for the
/// frame path. Returns the bytes taken.
fn relay_rows<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    upstream: &mut FrameReader<R>,
    client: &mut FrameWriter<W>,
    answers: &mut Answers,
    masker: Option<&Masker>,
) -> usize {
    if !answers.in_result() {
        return 0;
    }
    let rows = match masker {
        Some(m) => match m.rows() {
            Some(rows) => rows,
            None => return 0,
        },
        None => Rows::Unmasked,
    };
    match rows {
        Rows::Unmasked => upstream.take_run(b'D', |run| client.queue(run)),
        Rows::Masked(plan, key) => upstream.take_run(b'D', |run| {
            client.queue_with(|out| {
                for row in messages_of(run) {
                    plan.apply_into(row, key, None, out);
                }
            })
        }),
    }
}

/// Why a ParameterStatus body ends the session, if it does: the upstream reads statements
/// differently now, or the session's identity changed (in code the gateway could not see into:
/// a guarded SET ROLE or SESSION AUTHORIZATION never reaches Postgres).
fn reading_changed(body: &[u8]) -> Option<String> {
    let mut parts = body.split(|&b| b == 0);
    let name = std::str::from_utf8(parts.next()?).ok()?;
    let value = String::from_utf8_lossy(parts.next().unwrap_or_default());
    match name {
        "session_authorization" | "is_superuser" => Some(format!(
            "terminating connection because {name} changed to \"{value}\" during the session"
        )),
        _ => reading::diverged(name, &value),
    }
}

fn is_fatal(error_body: &[u8]) -> bool {
    messages::error_fields(error_body)
        .iter()
        .any(|(field, value)| *field == b'S' && (value == "FATAL" || value == "PANIC"))
}

fn upstream_error(e: FrameError) -> SessionEnd {
    match e {
        FrameError::Io(e) => SessionEnd::UpstreamIo(e),
        // A length past i32::MAX is no message size but a lie (Postgres' lengths are int32).
        FrameError::BadLength { len, max, .. } if len > max && len <= i32::MAX as usize => {
            SessionEnd::UpstreamTooLarge { len, max }
        }
        other => SessionEnd::UpstreamProtocol(other.to_string()),
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

#[cfg(test)]
mod tests {
    use super::reading_changed;

    fn status(name: &str, value: &str) -> Vec<u8> {
        [name.as_bytes(), b"\0", value.as_bytes(), b"\0"].concat()
    }

    #[test]
    fn a_change_of_reading_or_identity_reported_after_login_ends_the_session() {
        assert!(reading_changed(&status("standard_conforming_strings", "off")).is_some());
        assert!(reading_changed(&status("client_encoding", "SJIS")).is_some());
        assert!(reading_changed(&status("session_authorization", "postgres")).is_some());
        assert!(reading_changed(&status("is_superuser", "on")).is_some());
        assert!(reading_changed(&status("TimeZone", "UTC")).is_none());
        assert!(reading_changed(&status("client_encoding", "UTF8")).is_none());
    }
}
