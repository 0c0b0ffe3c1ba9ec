//! The matcher without sockets: each test announces what a client's messages ask for, feeds
//! the answers Postgres gives to them (as seen in its protocol documentation and in captured
//! sessions), and checks which request each answer is matched to. A mismatch here is where a
//! masked row would leave with another statement's plan, or an audit result would name the
//! wrong statement.

use super::*;

/// What an answer was matched to, in a form tests compare.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Aside,
    Within(&'static str, u32),
    Complete(&'static str, u32),
    Failed(Option<(&'static str, u32)>, Vec<&'static str>),
    Ready(u8, Vec<&'static str>),
    Unmatched(char),
}

fn name(request: &Request) -> &'static str {
    match request {
        Request::Query(_) => "query",
        Request::Parse => "parse",
        Request::Bind => "bind",
        Request::Describe(d) if d.injected => "describe (injected)",
        Request::Describe(_) => "describe",
        Request::Execute(_) => "execute",
        Request::Close(_) => "close",
        Request::Refused(_) => "refused",
        Request::Ready => "ready",
    }
}

fn seen(answer: Answer<'_>) -> Seen {
    let owner = |o: Owner<'_>| (name(o.request), o.part);
    let names = |requests: &[Request]| requests.iter().map(name).collect();
    match answer {
        Answer::Aside => Seen::Aside,
        Answer::Within(o) => Seen::Within(owner(o).0, o.part),
        Answer::Complete(o) => Seen::Complete(owner(o).0, o.part),
        Answer::Failed { owner: o, skipped } => Seen::Failed(o.map(owner), names(skipped)),
        Answer::Ready { status, skipped } => Seen::Ready(status, names(skipped)),
        Answer::Unmatched(u) => Seen::Unmatched(u.tag),
    }
}

fn query(parts: Option<u32>) -> Request {
    Request::Query(Query {
        parts,
        record: None,
        sources: None,
    })
}

fn execute(portal: &str) -> Request {
    Request::Execute(Execute {
        portal: portal.into(),
        record: None,
        plan: None,
    })
}

fn describe(target: Target, injected: bool) -> Request {
    Request::Describe(Describe {
        target,
        injected,
        record: None,
        source: None,
    })
}

fn refused(marker: &str) -> Request {
    Request::Refused(Refused {
        marker: marker.into(),
        error: Bytes::from_static(b"replacement"),
    })
}

/// Announces `requests`, then matches `answers` (tag and body) in order.
fn run(requests: Vec<Request>, answers: &[(u8, &[u8])]) -> Vec<Seen> {
    let (sent, mut matched) = pipeline();
    for request in requests {
        sent.announce(request);
    }
    answers
        .iter()
        .map(|(tag, body)| seen(matched.answer(*tag, body)))
        .collect()
}

const IDLE: (u8, &[u8]) = (b'Z', b"I");

#[test]
fn a_pipeline_of_extended_queries_is_answered_request_by_request() {
    let requests = vec![
        Request::Parse,
        Request::Bind,
        describe(Target::Portal(String::new()), false),
        execute(""),
        Request::Ready,
        Request::Bind,
        execute(""),
        Request::Ready,
    ];
    let answers: &[(u8, &[u8])] = &[
        (b'1', b""),
        (b'2', b""),
        (b'T', b""),
        (b'D', b""),
        (b'D', b""),
        (b'C', b"SELECT 2\0"),
        IDLE,
        (b'2', b""),
        (b'D', b""),
        (b'C', b"SELECT 1\0"),
        IDLE,
    ];
    assert_eq!(
        run(requests, answers),
        vec![
            Seen::Complete("parse", 0),
            Seen::Complete("bind", 0),
            Seen::Complete("describe", 0),
            Seen::Within("execute", 0),
            Seen::Within("execute", 0),
            Seen::Complete("execute", 0),
            Seen::Ready(b'I', vec![]),
            Seen::Complete("bind", 0),
            Seen::Within("execute", 0),
            Seen::Complete("execute", 0),
            Seen::Ready(b'I', vec![]),
        ]
    );
}

#[test]
fn an_error_fails_its_request_and_postgres_skips_the_rest_until_sync() {
    let requests = vec![
        Request::Parse,
        Request::Bind,
        execute(""),
        Request::Parse,
        Request::Bind,
        execute(""),
        Request::Ready,
        // The next cycle is not touched by the error of the one before.
        Request::Parse,
        Request::Ready,
    ];
    let answers: &[(u8, &[u8])] = &[
        (b'1', b""),
        (b'2', b""),
        (b'C', b"INSERT 0 1\0"),
        (b'1', b""),
        (b'E', b"SERROR\0C22P02\0\0"),
        (b'Z', b"E"),
        (b'1', b""),
        IDLE,
    ];
    assert_eq!(
        run(requests, answers),
        vec![
            Seen::Complete("parse", 0),
            Seen::Complete("bind", 0),
            Seen::Complete("execute", 0),
            Seen::Complete("parse", 0),
            Seen::Failed(Some(("bind", 0)), vec!["execute"]),
            Seen::Ready(b'E', vec![]),
            Seen::Complete("parse", 0),
            Seen::Ready(b'I', vec![]),
        ]
    );
}

#[test]
fn a_failed_statement_of_a_query_string_skips_the_statements_after_it() {
    let requests = vec![
        query(Some(3)),
        Request::Ready,
        query(Some(1)),
        Request::Ready,
    ];
    let answers: &[(u8, &[u8])] = &[
        (b'T', b""),
        (b'D', b""),
        (b'C', b"SELECT 1\0"),
        (b'E', b"SERROR\0C22012\0\0"),
        IDLE,
        (b'C', b"SELECT 0\0"),
        IDLE,
    ];
    assert_eq!(
        run(requests, answers),
        vec![
            Seen::Within("query", 0),
            Seen::Within("query", 0),
            Seen::Complete("query", 0),
            Seen::Failed(Some(("query", 1)), vec![]),
            Seen::Ready(b'I', vec![]),
            Seen::Complete("query", 0),
            Seen::Ready(b'I', vec![]),
        ]
    );
}

#[test]
fn a_suspended_portal_is_answered_again_by_its_next_execute() {
    let requests = vec![
        Request::Bind,
        execute("c"),
        Request::Ready,
        execute("c"),
        Request::Ready,
    ];
    let answers: &[(u8, &[u8])] = &[
        (b'2', b""),
        (b'D', b""),
        (b'D', b""),
        (b's', b""),
        (b'Z', b"T"),
        (b'D', b""),
        (b'C', b"SELECT 3\0"),
        (b'Z', b"T"),
    ];
    assert_eq!(
        run(requests, answers),
        vec![
            Seen::Complete("bind", 0),
            Seen::Within("execute", 0),
            Seen::Within("execute", 0),
            Seen::Complete("execute", 0),
            Seen::Ready(b'T', vec![]),
            Seen::Within("execute", 0),
            Seen::Complete("execute", 0),
            Seen::Ready(b'T', vec![]),
        ]
    );
}

#[test]
fn copy_in_and_out_are_answered_within_the_statement_that_started_them() {
    // COPY t FROM STDIN; COPY t TO STDOUT — the client's CopyData and CopyDone are not
    // requests: the copy's CommandComplete answers the statement.
    let requests = vec![
        query(Some(2)),
        Request::Ready,
        Request::Bind,
        execute(""),
        Request::Ready,
    ];
    let answers: &[(u8, &[u8])] = &[
        (b'G', b""),
        (b'C', b"COPY 2\0"),
        (b'H', b""),
        (b'd', b""),
        (b'd', b""),
        (b'c', b""),
        (b'C', b"COPY 2\0"),
        IDLE,
        (b'2', b""),
        (b'G', b""),
        (b'E', b"SERROR\0C57014\0\0"),
        IDLE,
    ];
    assert_eq!(
        run(requests, answers),
        vec![
            Seen::Within("query", 0),
            Seen::Complete("query", 0),
            Seen::Within("query", 1),
            Seen::Within("query", 1),
            Seen::Within("query", 1),
            Seen::Within("query", 1),
            Seen::Complete("query", 1),
            Seen::Ready(b'I', vec![]),
            Seen::Complete("bind", 0),
            Seen::Within("execute", 0),
            // CopyFail: the copy's error fails its Execute.
            Seen::Failed(Some(("execute", 0)), vec![]),
            Seen::Ready(b'I', vec![]),
        ]
    );
}

#[test]
fn notices_notifications_and_settings_in_between_answer_nothing() {
    let requests = vec![query(Some(1)), Request::Ready];
    let answers: &[(u8, &[u8])] = &[
        (b'N', b"SNOTICE\0\0"),
        (b'T', b""),
        (b'A', b""),
        (b'D', b""),
        (b'S', b"TimeZone\0UTC\0"),
        (b'D', b""),
        (b'N', b"SWARNING\0\0"),
        (b'C', b"SELECT 2\0"),
        (b'A', b""),
        IDLE,
        // And between cycles, when nothing is owed.
        (b'A', b""),
    ];
    assert_eq!(
        run(requests, answers),
        vec![
            Seen::Aside,
            Seen::Within("query", 0),
            Seen::Aside,
            Seen::Within("query", 0),
            Seen::Aside,
            Seen::Within("query", 0),
            Seen::Aside,
            Seen::Complete("query", 0),
            Seen::Aside,
            Seen::Ready(b'I', vec![]),
            Seen::Aside,
        ]
    );
}

#[test]
fn empty_queries_are_answered_as_statements() {
    // An empty query string, and an Execute of an empty statement.
    let requests = vec![
        query(Some(1)),
        Request::Ready,
        Request::Parse,
        Request::Bind,
        execute(""),
        Request::Ready,
    ];
    let answers: &[(u8, &[u8])] = &[
        (b'I', b""),
        IDLE,
        (b'1', b""),
        (b'2', b""),
        (b'I', b""),
        IDLE,
    ];
    assert_eq!(
        run(requests, answers),
        vec![
            Seen::Complete("query", 0),
            Seen::Ready(b'I', vec![]),
            Seen::Complete("parse", 0),
            Seen::Complete("bind", 0),
            Seen::Complete("execute", 0),
            Seen::Ready(b'I', vec![]),
        ]
    );
}

#[test]
fn a_query_not_analysed_is_answered_until_its_ready_for_query() {
    let requests = vec![query(None), Request::Ready, query(Some(1)), Request::Ready];
    let answers: &[(u8, &[u8])] = &[
        (b'C', b"SET\0"),
        (b'T', b""),
        (b'D', b""),
        (b'C', b"SELECT 1\0"),
        IDLE,
        (b'C', b"SELECT 1\0"),
        IDLE,
    ];
    assert_eq!(
        run(requests, answers),
        vec![
            Seen::Complete("query", 0),
            Seen::Within("query", 1),
            Seen::Within("query", 1),
            Seen::Complete("query", 1),
            Seen::Ready(b'I', vec![]),
            Seen::Complete("query", 0),
            Seen::Ready(b'I', vec![]),
        ]
    );
}

#[test]
fn a_refused_message_in_the_middle_fails_at_its_place() {
    // Parse ok, Bind refused (its substitute fails upstream), then what follows is skipped.
    let requests = vec![
        Request::Parse,
        refused("sluice refused 1"),
        execute(""),
        Request::Ready,
        // A refusal in a cycle that already failed is skipped with the rest.
        Request::Parse,
        refused("sluice refused 2"),
        Request::Ready,
    ];
    let answers: &[(u8, &[u8])] = &[
        (b'1', b""),
        (
            b'E',
            b"SERROR\0C42703\0Mcolumn \"sluice refused 1\" does not exist\0\0",
        ),
        IDLE,
        (b'E', b"SERROR\0C42601\0\0"),
        IDLE,
    ];
    assert_eq!(
        run(requests, answers),
        vec![
            Seen::Complete("parse", 0),
            Seen::Failed(Some(("refused", 0)), vec!["execute"]),
            Seen::Ready(b'I', vec![]),
            Seen::Failed(Some(("parse", 0)), vec!["refused"]),
            Seen::Ready(b'I', vec![]),
        ]
    );
}

#[test]
fn describes_are_answered_by_their_descriptions_and_an_injected_one_is_known_as_such() {
    let requests = vec![
        Request::Parse,
        describe(Target::Statement("s".into()), false),
        Request::Bind,
        describe(Target::Portal(String::new()), true),
        execute(""),
        describe(Target::Statement("n".into()), false),
        Request::Ready,
    ];
    let answers: &[(u8, &[u8])] = &[
        (b'1', b""),
        (b't', b""),
        (b'T', b""),
        (b'2', b""),
        (b'T', b""),
        (b'D', b""),
        (b'C', b"SELECT 1\0"),
        (b't', b""),
        (b'n', b""),
        IDLE,
    ];
    assert_eq!(
        run(requests, answers),
        vec![
            Seen::Complete("parse", 0),
            Seen::Within("describe", 0),
            Seen::Complete("describe", 0),
            Seen::Complete("bind", 0),
            Seen::Complete("describe (injected)", 0),
            Seen::Within("execute", 0),
            Seen::Complete("execute", 0),
            Seen::Within("describe", 0),
            Seen::Complete("describe", 0),
            Seen::Ready(b'I', vec![]),
        ]
    );
}

#[test]
fn a_close_is_answered_by_close_complete() {
    let requests = vec![
        Request::Close(Target::Statement("s".into())),
        Request::Ready,
    ];
    let answers: &[(u8, &[u8])] = &[(b'3', b""), IDLE];
    assert_eq!(
        run(requests, answers),
        vec![Seen::Complete("close", 0), Seen::Ready(b'I', vec![])]
    );
}

#[test]
fn an_error_with_nothing_owed_fails_no_request() {
    // A FATAL while idle, and a commit at Sync that fails (a deferred constraint).
    let requests = vec![Request::Parse, Request::Bind, execute(""), Request::Ready];
    let answers: &[(u8, &[u8])] = &[
        (b'E', b"SFATAL\0C57P01\0\0"),
        (b'1', b""),
        (b'2', b""),
        (b'C', b"INSERT 0 1\0"),
        (b'E', b"SERROR\0C23505\0\0"),
        IDLE,
    ];
    assert_eq!(
        run(requests, answers),
        vec![
            Seen::Failed(Some(("parse", 0)), vec!["bind", "execute"]),
            Seen::Unmatched('1'),
            Seen::Unmatched('2'),
            Seen::Unmatched('C'),
            Seen::Failed(None, vec![]),
            Seen::Ready(b'I', vec![]),
        ]
    );
    let answers: &[(u8, &[u8])] = &[(b'E', b"SFATAL\0C57P01\0\0")];
    assert_eq!(run(vec![], answers), vec![Seen::Failed(None, vec![])]);
}

#[test]
fn an_answer_nothing_asked_for_is_unmatched_and_leaves_what_is_owed() {
    let requests = vec![Request::Bind, execute(""), Request::Ready];
    let answers: &[(u8, &[u8])] = &[
        // A ParseComplete for a Bind, rows before the Bind is answered.
        (b'1', b""),
        (b'D', b""),
        (b'2', b""),
        (b'3', b""),
        (b'n', b""),
        (b'D', b""),
        (b'C', b"SELECT 1\0"),
        IDLE,
        // Nothing owed: a ReadyForQuery, a row, a completion.
        IDLE,
        (b'D', b""),
        (b'C', b"SELECT 1\0"),
        (b'V', b""),
    ];
    assert_eq!(
        run(requests, answers),
        vec![
            Seen::Unmatched('1'),
            Seen::Unmatched('D'),
            Seen::Complete("bind", 0),
            Seen::Unmatched('3'),
            Seen::Unmatched('n'),
            Seen::Within("execute", 0),
            Seen::Complete("execute", 0),
            Seen::Ready(b'I', vec![]),
            Seen::Unmatched('Z'),
            Seen::Unmatched('D'),
            Seen::Unmatched('C'),
            Seen::Unmatched('V'),
        ]
    );
}

#[test]
fn requests_announced_while_answers_arrive_are_matched_in_order() {
    let (sent, mut matched) = pipeline();
    sent.announce(query(Some(1)));
    sent.announce(Request::Ready);
    assert_eq!(
        seen(matched.answer(b'C', b"SELECT 1\0")),
        Seen::Complete("query", 0)
    );
    // The next cycle is announced before the first one's ReadyForQuery arrives.
    sent.announce(Request::Parse);
    sent.announce(Request::Ready);
    assert_eq!(seen(matched.answer(b'Z', b"I")), Seen::Ready(b'I', vec![]));
    assert_eq!(seen(matched.answer(b'1', b"")), Seen::Complete("parse", 0));
    assert_eq!(seen(matched.answer(b'Z', b"I")), Seen::Ready(b'I', vec![]));
}

#[test]
fn a_ready_for_query_closes_a_cycle_whose_requests_were_skipped_silently() {
    // Postgres skips without an error of its own the requests after one the gateway failed
    // in an earlier message of the same cycle.
    let requests = vec![Request::Parse, Request::Bind, execute(""), Request::Ready];
    let answers: &[(u8, &[u8])] = &[(b'1', b""), IDLE];
    assert_eq!(
        run(requests, answers),
        vec![
            Seen::Complete("parse", 0),
            Seen::Ready(b'I', vec!["bind", "execute"]),
        ]
    );
}

#[test]
fn rows_and_descriptions_out_of_their_place_are_unmatched() {
    // A Query's statement describes its rows before sending them; an Execute never describes;
    // CopyData comes only inside COPY TO STDOUT.
    let requests = vec![
        query(Some(2)),
        Request::Ready,
        Request::Bind,
        execute(""),
        Request::Ready,
    ];
    let answers: &[(u8, &[u8])] = &[
        (b'C', b"SELECT 0\0"),
        (b'D', b""),
        (b'd', b""),
        (b'T', b""),
        (b'D', b""),
        (b'C', b"SELECT 1\0"),
        IDLE,
        (b'2', b""),
        (b'T', b""),
        (b'I', b""),
        (b'D', b""),
        (b'I', b""),
        (b'C', b"SELECT 1\0"),
        IDLE,
    ];
    assert_eq!(
        run(requests, answers),
        vec![
            Seen::Complete("query", 0),
            Seen::Unmatched('D'),
            Seen::Unmatched('d'),
            Seen::Within("query", 1),
            Seen::Within("query", 1),
            Seen::Complete("query", 1),
            Seen::Ready(b'I', vec![]),
            Seen::Complete("bind", 0),
            Seen::Unmatched('T'),
            Seen::Complete("execute", 0),
            Seen::Unmatched('D'),
            Seen::Unmatched('I'),
            Seen::Unmatched('C'),
            Seen::Ready(b'I', vec![]),
        ]
    );
}

#[test]
fn only_rows_of_the_result_being_answered_may_skip_matching() {
    let (sent, mut matched) = pipeline();
    sent.announce(query(Some(1)));
    sent.announce(Request::Ready);
    sent.announce(execute(""));
    sent.announce(Request::Ready);
    assert!(
        !matched.in_result(),
        "a Query's rows follow its RowDescription"
    );
    matched.answer(b'T', b"");
    assert!(matched.in_result());
    matched.answer(b'C', b"SELECT 1\0");
    assert!(!matched.in_result(), "the result is complete");
    matched.answer(b'Z', b"I");
    assert!(matched.in_result(), "an Execute's rows come undescribed");
    matched.answer(b'C', b"SELECT 0\0");
    assert!(!matched.in_result());
}
