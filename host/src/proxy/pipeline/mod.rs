//! Which answer belongs to which request: the one place a session matches what Postgres sends
//! back to what the gateway sent it.
//!
//! The client direction announces every message it queues upstream that Postgres answers, in
//! the order it queues them ([`Requests`]): a Query (its statements answer one after another),
//! Parse, Bind, Describe, Execute, Close, a refused message's substitute, and the
//! ReadyForQuery that ends each request cycle (Sync, the end of a Query). The upstream direction
//! matches each message Postgres sends to the oldest request still owed an answer
//! ([`Answers::answer`]): Postgres answers in order, an ErrorResponse fails the request at the
//! front and skips the rest of its cycle (the rest of a query string, or everything up to
//! Sync), and ReadyForQuery closes the cycle. Audit results, masking plans and the rewriting
//! of refusals all read the same match, so they cannot disagree about which statement an
//! answer belongs to; an answer that matches no request ends the session (`Unmatched`), since
//! masking and audit would otherwise guess.
//!
//! Messages Postgres does not answer (Flush, COPY data from the client, an ignored Sync during
//! COPY FROM STDIN) are not announced; what they lead to answers the request that started them.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::analysis::Statement;

/// What the gateway sent upstream that Postgres will answer.
#[derive(Debug)]
pub enum Request {
    /// A Query. Its statements answer one after another (a RowDescription and rows, then
    /// CommandComplete or EmptyQueryResponse each); its ReadyForQuery is a separate [`Request::Ready`].
    Query(Query),
    Parse,
    Bind,
    Describe(Describe),
    Execute(Execute),
    Close(Target),
    /// A refused message's substitute: it fails upstream, and the client gets `error` in place
    /// of that failure.
    Refused(Refused),
    /// Sync, or the end of a Query: answered by ReadyForQuery.
    Ready,
}

/// A Query's statements and what each consumer needs of them.
#[derive(Debug)]
pub struct Query {
    /// How many statements answer: the analysis' count (at least one: an empty query string is
    /// answered by EmptyQueryResponse), or `None` when the text was not analysed.
    pub parts: Option<u32>,
    /// The audit record of the text.
    pub record: Option<Record>,
    /// Masking: what each statement's result columns come from (`None` before masking tracks
    /// the session).
    pub sources: Option<Vec<Source>>,
}

/// An audit record answers are recorded against.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    pub statement: u64,
    pub started: Instant,
}

impl Record {
    pub fn now(statement: u64) -> Record {
        Record {
            statement,
            started: Instant::now(),
        }
    }
}

/// What a result's columns come from, for masking: the statement whose lineage plans them
/// (for a FETCH, the cursor's DECLARE); `None` when it cannot be known.
#[derive(Debug, Clone, Default)]
pub struct Source(pub Option<Statement>);

/// A prepared statement or a portal, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Statement(String),
    Portal(String),
}

impl Target {
    /// The target of a Describe or Close message body (`S` or `P`, then the name).
    pub fn of(body: &[u8]) -> Option<Target> {
        let (&kind, rest) = body.split_first()?;
        let name = crate::wire::frontend::pg_name(crate::wire::frontend::cstr(rest).0?);
        match kind {
            b'S' => Some(Target::Statement(name.to_owned())),
            b'P' => Some(Target::Portal(name.to_owned())),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct Describe {
    pub target: Target,
    /// Sent by the gateway, not the client: its answer goes no further.
    pub injected: bool,
    /// The audit record of the execution a described portal belongs to (its Bind's), for
    /// the record of how its result is masked.
    pub record: Option<u64>,
    /// Masking: what the described result comes from (`None` before masking tracks the
    /// session).
    pub source: Option<Source>,
}

#[derive(Debug)]
pub struct Execute {
    pub portal: String,
    /// The audit record of the Bind that made the portal.
    pub record: Option<Record>,
    /// Masking: whose plan its rows take (`None` before masking tracks the session).
    pub plan: Option<PlanOf>,
}

/// Whose masking plan an Execute's rows take.
#[derive(Debug, Clone)]
pub enum PlanOf {
    /// The portal's own, from its Describe.
    Portal,
    /// The statement's the portal was bound from, described before.
    Statement(String),
}

#[derive(Debug)]
pub struct Refused {
    /// Text the substitute's failure carries, so that it is never taken for another error.
    pub marker: String,
    /// The ErrorResponse the client gets instead.
    pub error: Bytes,
}

impl Request {
    /// The audit record the request's results are recorded against.
    pub fn record(&self) -> Option<Record> {
        match self {
            Request::Query(q) => q.record,
            Request::Execute(e) => e.record,
            _ => None,
        }
    }
}

/// A request and, for a Query, which of its statements.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub request: &'a Request,
    /// The statement of a Query (0 for every other request).
    pub part: u32,
}

/// What an upstream message is to the requests it answers.
#[derive(Debug)]
pub enum Answer<'a> {
    /// Not an answer: NoticeResponse, NotificationResponse, ParameterStatus.
    Aside,
    /// Part of the answer to `owner`, which goes on: a RowDescription before rows, a DataRow,
    /// a COPY message, a Describe's ParameterDescription.
    Within(Owner<'a>),
    /// The last message answering `owner`: CommandComplete, EmptyQueryResponse,
    /// PortalSuspended, ParseComplete, BindComplete, CloseComplete, a Describe's
    /// RowDescription or NoData.
    Complete(Owner<'a>),
    /// An ErrorResponse. It fails `owner` (`None`: nothing was owed an answer — a FATAL
    /// while idle, or a commit at Sync that failed), and Postgres skips `skipped`, the rest of
    /// the cycle (for a failed Query, also its statements after `owner.part`).
    Failed {
        owner: Option<Owner<'a>>,
        skipped: &'a [Request],
    },
    /// ReadyForQuery, with the transaction status it reports; `skipped` were never answered
    /// (after an error in the cycle).
    Ready { status: u8, skipped: &'a [Request] },
    /// Nothing announced accounts for this message.
    Unmatched(UnmatchedAnswer),
}

/// An upstream message no announced request accounts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the upstream sent message {tag:?} while the oldest request owed an answer was {owed}")]
pub struct UnmatchedAnswer {
    pub tag: char,
    pub owed: &'static str,
}

/// The two halves of a session's matching: the client direction's and the upstream
/// direction's.
pub fn pipeline() -> (Requests, Answers) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (
        Requests { sender },
        Answers {
            receiver,
            owed: VecDeque::new(),
            parts_done: 0,
            phase: Phase::Start,
            finished: Vec::new(),
        },
    )
}

/// The client direction's half: announces requests in the order they are queued upstream.
pub struct Requests {
    sender: mpsc::UnboundedSender<Request>,
}

impl Requests {
    /// `request` was queued upstream, after every request announced before it.
    pub fn announce(&self, request: Request) {
        // The receiver lives as long as the session's upstream direction; once that has ended
        // nothing answers anyway.
        let _ = self.sender.send(request);
    }
}

/// Where the answer to a statement's result stands: which messages may come next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing of it yet.
    Start,
    /// A Query's statement sent its RowDescription, or an Execute its first row.
    Rows,
    /// COPY FROM STDIN: the client sends the data.
    CopyIn,
    /// COPY TO STDOUT: CopyData until CopyDone.
    CopyOut,
}

/// The upstream direction's half: matches answers to requests.
pub struct Answers {
    receiver: mpsc::UnboundedReceiver<Request>,
    owed: VecDeque<Request>,
    /// Statements of the Query at the front answered so far.
    parts_done: u32,
    /// Where the result being answered stands.
    phase: Phase,
    /// Requests the last answer ended, lent out by it.
    finished: Vec<Request>,
}

impl Answers {
    fn refill(&mut self) {
        while let Ok(request) = self.receiver.try_recv() {
            self.owed.push_back(request);
        }
    }

    /// What the upstream message `tag` (with `body`) answers.
    pub fn answer(&mut self, tag: u8, body: &[u8]) -> Answer<'_> {
        self.finished.clear();
        self.refill();
        match tag {
            b'N' | b'A' | b'S' => Answer::Aside,
            b'Z' => {
                loop {
                    match self.owed.pop_front() {
                        Some(Request::Ready) => break,
                        // A Query not analysed is answered until its ReadyForQuery.
                        Some(Request::Query(Query { parts: None, .. })) if self.parts_done > 0 => {}
                        Some(request) => self.finished.push(request),
                        None => {
                            // Put back what was taken: it is still owed.
                            for request in self.finished.drain(..).rev() {
                                self.owed.push_front(request);
                            }
                            return self.unmatched(tag);
                        }
                    }
                }
                self.parts_done = 0;
                self.phase = Phase::Start;
                Answer::Ready {
                    status: body.first().copied().unwrap_or(b'I'),
                    skipped: &self.finished,
                }
            }
            b'E' => {
                if matches!(self.owed.front(), None | Some(Request::Ready)) {
                    return Answer::Failed {
                        owner: None,
                        skipped: &[],
                    };
                }
                let part = self.parts_done;
                self.parts_done = 0;
                self.phase = Phase::Start;
                while let Some(request) = self.owed.pop_front() {
                    if matches!(request, Request::Ready) {
                        self.owed.push_front(request);
                        break;
                    }
                    self.finished.push(request);
                }
                let (failed, skipped) = self.finished.split_at(1);
                Answer::Failed {
                    owner: Some(Owner {
                        request: &failed[0],
                        part,
                    }),
                    skipped,
                }
            }
            b'1' => self.complete_if(tag, |r| matches!(r, Request::Parse)),
            b'2' => self.complete_if(tag, |r| matches!(r, Request::Bind)),
            b'3' => self.complete_if(tag, |r| matches!(r, Request::Close(_))),
            b'n' => self.complete_if(tag, |r| matches!(r, Request::Describe(_))),
            b't' => match self.owed.front() {
                Some(r @ Request::Describe(d)) if matches!(d.target, Target::Statement(_)) => {
                    Answer::Within(Owner {
                        request: r,
                        part: 0,
                    })
                }
                _ => self.unmatched(tag),
            },
            b'T' if matches!(self.owed.front(), Some(Request::Describe(_))) => {
                self.complete_if(tag, |_| true)
            }
            b'T' | b'D' | b'G' | b'H' | b'd' | b'c' => {
                let (query, execute) = match self.owed.front() {
                    Some(Request::Query(_)) => (true, false),
                    Some(Request::Execute(_)) => (false, true),
                    _ => return self.unmatched(tag),
                };
                // A Query's statement describes its rows first; an Execute's rows come
                // without (its portal was described, or not, before).
                let next = match (tag, self.phase) {
                    (b'T', Phase::Start) if query => Phase::Rows,
                    (b'D', Phase::Rows) => Phase::Rows,
                    (b'D', Phase::Start) if execute => Phase::Rows,
                    (b'G', Phase::Start) => Phase::CopyIn,
                    (b'H', Phase::Start) => Phase::CopyOut,
                    (b'd' | b'c', Phase::CopyOut) => Phase::CopyOut,
                    _ => return self.unmatched(tag),
                };
                self.phase = next;
                Answer::Within(Owner {
                    request: self.owed.front().expect("the front was checked"),
                    part: self.parts_done,
                })
            }
            b'C' | b'I' | b's' => {
                let fits = matches!(
                    (tag, self.phase, self.owed.front()),
                    (b'C', _, Some(Request::Query(_) | Request::Execute(_)))
                        | (
                            b'I',
                            Phase::Start,
                            Some(Request::Query(_) | Request::Execute(_))
                        )
                        | (b's', Phase::Start | Phase::Rows, Some(Request::Execute(_)))
                );
                if !fits {
                    return self.unmatched(tag);
                }
                self.phase = Phase::Start;
                match self.owed.front() {
                    Some(Request::Query(query)) => {
                        let part = self.parts_done;
                        self.parts_done += 1;
                        let last = query.parts.is_some_and(|parts| self.parts_done >= parts);
                        if last {
                            self.parts_done = 0;
                            let query = self.owed.pop_front().expect("the front was a Query");
                            self.finished.push(query);
                            Answer::Complete(Owner {
                                request: &self.finished[0],
                                part,
                            })
                        } else {
                            let request = self.owed.front().expect("the front is a Query");
                            Answer::Complete(Owner { request, part })
                        }
                    }
                    _ => self.complete_if(tag, |_| true),
                }
            }
            _ => self.unmatched(tag),
        }
    }

    /// Whether a result is being answered: DataRows arriving now belong to the request at the
    /// front (a Query or an Execute).
    pub fn in_result(&mut self) -> bool {
        self.refill();
        matches!(
            (self.owed.front(), self.phase),
            (Some(Request::Query(_)), Phase::Rows)
                | (Some(Request::Execute(_)), Phase::Start | Phase::Rows)
        )
    }

    /// Completes the request at the front if `fits` it.
    fn complete_if(&mut self, tag: u8, fits: impl Fn(&Request) -> bool) -> Answer<'_> {
        match self.owed.front() {
            Some(front) if fits(front) => {
                let request = self.owed.pop_front().expect("the front was checked");
                self.finished.push(request);
                Answer::Complete(Owner {
                    request: &self.finished[0],
                    part: 0,
                })
            }
            _ => self.unmatched(tag),
        }
    }

    fn unmatched(&self, tag: u8) -> Answer<'_> {
        let owed = match self.owed.front() {
            None => "none",
            Some(Request::Query(_)) => "a Query",
            Some(Request::Parse) => "a Parse",
            Some(Request::Bind) => "a Bind",
            Some(Request::Describe(_)) => "a Describe",
            Some(Request::Execute(_)) => "an Execute",
            Some(Request::Close(_)) => "a Close",
            Some(Request::Refused(_)) => "a refused message's substitute",
            Some(Request::Ready) => "a Sync",
        };
        Answer::Unmatched(UnmatchedAnswer {
            tag: char::from(tag),
            owed,
        })
    }
}

#[cfg(test)]
mod tests;
