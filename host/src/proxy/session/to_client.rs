//! The upstream → client direction of a session: each answer is matched to its request
//! (`pipeline/`), then rewritten where a refusal or masking says so, recorded in the audit
//! trail, and relayed; rows go out only once their statements' audit records may be relied on.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::end::SessionEnd;
use super::progress::Progress;
use super::reading;
use crate::proxy::gate::refusal;
use crate::proxy::masker::{Masker, Relay, Rows};
use crate::proxy::pipeline::{Answer, Answers, Owner, Request};
use crate::proxy::trail::Results;
use crate::wire::backend as messages;
use crate::wire::frame::{FrameError, FrameReader, FrameWriter, messages_of};

/// Backend messages Postgres sends after login. Authentication requests, BackendKeyData and
/// NegotiateProtocolVersion only belong to the login; after it they, like any unknown type,
/// mean a broken or hostile upstream, refused on the type byte.
pub(crate) fn upstream_may_send(tag: u8) -> bool {
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

/// What the upstream direction shares with the client direction while it relays.
pub(crate) struct Relayed<'a> {
    /// Which request each answer belongs to.
    pub answers: &'a mut Answers,
    pub progress: &'a Progress,
    /// The grant is read-only: a reported change to read-write ends the session.
    pub read_only: bool,
}

pub(crate) async fn upstream_to_client<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    upstream: &mut FrameReader<R>,
    client: &mut FrameWriter<W>,
    relayed: Relayed<'_>,
    notices: &mut mpsc::UnboundedReceiver<Bytes>,
    results: Option<&Results>,
    mut masker: Option<&mut Masker>,
) -> SessionEnd {
    let Relayed {
        answers,
        progress,
        read_only,
    } = relayed;
    let (cycles_done, copy_in) = (&progress.done, &progress.copy_in);
    // An ErrorResponse in the request cycle being answered.
    let mut cycle_failed = false;
    // Whether the last message relayed was a FATAL: then a close is the upstream's own,
    // explained, ending (admin shutdown, its idle timeout...).
    let mut said_fatal = false;
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
                && let Some(why) = reading_changed(frame.body(), read_only)
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
            if let Some(results) = results {
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
            }
            if client.wants_flush()
                && let Err(e) = client.flush().await
            {
                return SessionEnd::ClientIo(e);
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
        if let Err(e) = client.flush().await {
            return SessionEnd::ClientIo(e);
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
fn reading_changed(body: &[u8], read_only: bool) -> Option<String> {
    let mut parts = body.split(|&b| b == 0);
    let name = std::str::from_utf8(parts.next()?).ok()?;
    let value = String::from_utf8_lossy(parts.next().unwrap_or_default());
    match name {
        "session_authorization" | "is_superuser" => Some(format!(
            "terminating connection because {name} changed to \"{value}\" during the session"
        )),
        _ => reading::diverged(name, &value)
            .or_else(|| super::read_only::reported(name, &value, read_only)),
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

#[cfg(test)]
mod tests {
    use super::reading_changed;

    fn reading_changed_rw(body: &[u8]) -> Option<String> {
        reading_changed(body, false)
    }

    fn status(name: &str, value: &str) -> Vec<u8> {
        [name.as_bytes(), b"\0", value.as_bytes(), b"\0"].concat()
    }

    #[test]
    fn a_change_of_reading_or_identity_reported_after_login_ends_the_session() {
        assert!(reading_changed_rw(&status("standard_conforming_strings", "off")).is_some());
        assert!(reading_changed_rw(&status("client_encoding", "SJIS")).is_some());
        assert!(reading_changed_rw(&status("session_authorization", "postgres")).is_some());
        assert!(reading_changed_rw(&status("is_superuser", "on")).is_some());
        assert!(reading_changed_rw(&status("TimeZone", "UTC")).is_none());
        assert!(reading_changed_rw(&status("client_encoding", "UTF8")).is_none());
    }
}
