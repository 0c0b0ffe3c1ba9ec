//! How a refused message is answered. The gateway does not answer it itself: responses to
//! messages already forwarded may still be on their way, and a pipeline's answers must stay in
//! order. Instead the refused message is replaced by one that fails upstream at the same point,
//! and the gateway rewrites that failure into its own ErrorResponse on the way back (the
//! substitute is announced to the pipeline as [`Request::Refused`], so its failure is known by
//! its place). Postgres itself then does the rest exactly as for any error: in the extended
//! protocol it discards messages until Sync (so an earlier unnamed statement can never run in
//! the refused one's place, and a refused named statement does not exist), and inside a
//! transaction block the transaction is failed, so a later COMMIT cannot commit earlier writes.

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::frontend;

use crate::proxy::pipeline::{Refused, Request};
use crate::wire::backend::{self as messages, Refusal};

/// A substitute for a refused `Query` or `FunctionCall` message, and its announcement.
pub fn query(refusal: &Refusal) -> (Bytes, Request) {
    let (sql, refused) = substitute(refusal);
    let mut buf = BytesMut::new();
    frontend::query(&sql, &mut buf).expect("the substitute has no NUL");
    (buf.freeze(), Request::Refused(refused))
}

/// A substitute for a refused extended-protocol message (a `Parse` of statement `name`, or a
/// Bind), and its announcement.
pub fn parse(name: &str, refusal: &Refusal) -> (Bytes, Request) {
    let (sql, refused) = substitute(refusal);
    let mut buf = BytesMut::new();
    frontend::parse(name, &sql, std::iter::empty(), &mut buf)
        .expect("statement names from the client are NUL-free");
    (buf.freeze(), Request::Refused(refused))
}

fn substitute(refusal: &Refusal) -> (String, Refused) {
    let marker = format!("sluice refused {:032x}", rand::random::<u128>());
    // A column that cannot exist: Postgres fails it at parse analysis, before anything runs,
    // with an error that names the marker.
    let sql = format!("SELECT \"{marker}\"");
    let error = messages::error(refusal.sqlstate, &refusal.message);
    (sql, Refused { marker, error })
}

/// The ErrorResponse the client gets for `error_body`, the failure of `refused`'s substitute
/// (`None` if the error is not that failure: then it is relayed as it came).
pub fn rewrite<'a>(refused: &'a Refused, error_body: &[u8]) -> Option<&'a Bytes> {
    let marker = refused.marker.as_bytes();
    error_body
        .windows(marker.len())
        .any(|w| w == marker)
        .then_some(&refused.error)
}
