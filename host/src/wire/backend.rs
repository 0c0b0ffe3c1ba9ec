//! Backend messages the gateway writes itself (encoded with pgwire), as opposed to the ones it
//! relays, and the fields of the error and notice messages it reads.

use bytes::{Bytes, BytesMut};
use pgwire::error::ErrorInfo;
use pgwire::messages::Message;
use pgwire::messages::response::{ErrorResponse, NoticeResponse};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, NegotiateProtocolVersion, SecretKey,
};

/// Why the gateway refuses a message: the SQLSTATE and the message the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub sqlstate: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(sqlstate: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            sqlstate,
            message: message.into(),
        }
    }
}

fn encode(message: &impl Message) -> Bytes {
    let mut buf = BytesMut::with_capacity(message.message_length() + 1);
    // Encoding into a growable buffer only fails for values the gateway never builds
    // (e.g. oversized secret keys); an empty result would be a bug caught by tests.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

/// An `ErrorResponse` with severity `FATAL`: the connection ends after it.
pub fn fatal(code: &str, message: impl Into<String>) -> Bytes {
    error_with_severity("FATAL", code, message)
}

/// An `ErrorResponse` with severity `ERROR`: the statement fails, the session goes on.
pub fn error(code: &str, message: impl Into<String>) -> Bytes {
    error_with_severity("ERROR", code, message)
}

fn error_with_severity(severity: &str, code: &str, message: impl Into<String>) -> Bytes {
    let info = ErrorInfo::new(severity.to_owned(), code.to_owned(), message.into());
    encode(&ErrorResponse::from(info))
}

/// A `NoticeResponse` with severity WARNING (SQLSTATE 01000).
pub fn warning(message: impl Into<String>) -> Bytes {
    let notice = ErrorInfo::new("WARNING".into(), "01000".into(), message.into());
    encode(&NoticeResponse::from(notice))
}

/// A `NoticeResponse` the client shows as a notice.
pub fn notice(message: impl Into<String>) -> Bytes {
    let info = ErrorInfo::new("NOTICE".to_owned(), "00000".to_owned(), message.into());
    encode(&NoticeResponse::from(info))
}

pub fn auth_cleartext_request() -> Bytes {
    encode(&Authentication::CleartextPassword)
}

pub fn auth_ok() -> Bytes {
    encode(&Authentication::Ok)
}

pub fn backend_key_data(pid: i32, secret: i32) -> Bytes {
    encode(&BackendKeyData::new(pid, SecretKey::I32(secret)))
}

/// Tells a client asking for a newer 3.x minor version, or for `_pq_.` protocol options, what
/// this gateway speaks: 3.0 and none of the options.
pub fn negotiate_protocol_version(unsupported_options: Vec<String>) -> Bytes {
    encode(&NegotiateProtocolVersion::new(0, unsupported_options))
}

/// Frontend `Terminate`.
pub fn terminate() -> Bytes {
    let mut buf = BytesMut::with_capacity(5);
    postgres_protocol::message::frontend::terminate(&mut buf);
    buf.freeze()
}

/// The fields of an `ErrorResponse` or `NoticeResponse` body, as (field type, value) pairs.
pub fn error_fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut fields = Vec::new();
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        fields.push((kind, String::from_utf8_lossy(&tail[..end]).into_owned()));
        rest = tail.get(end + 1..).unwrap_or_default();
    }
    fields
}

/// One field of an `ErrorResponse` or `NoticeResponse` body (`b'C'`: the SQLSTATE).
pub fn error_field(body: &[u8], field: u8) -> Option<String> {
    error_fields(body)
        .into_iter()
        .find(|(kind, _)| *kind == field)
        .map(|(_, value)| value)
}

/// SQLSTATE and message of an error body, for logs.
pub fn error_summary(body: &[u8]) -> String {
    let fields = error_fields(body);
    let get = |k: u8| {
        fields
            .iter()
            .find(|(f, _)| *f == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    format!("{} {}: {}", get(b'S'), get(b'C'), get(b'M'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::sqlstate;

    #[test]
    fn fatal_carries_severity_code_and_message() {
        let bytes = fatal(sqlstate::INVALID_PASSWORD, "nope");
        assert_eq!(bytes[0], b'E');
        let fields = error_fields(&bytes[5..]);
        assert!(fields.contains(&(b'S', "FATAL".into())));
        assert!(fields.contains(&(b'C', "28P01".into())));
        assert!(fields.contains(&(b'M', "nope".into())));
        assert_eq!(error_summary(&bytes[5..]), "FATAL 28P01: nope");
    }

    #[test]
    fn backend_key_data_is_twelve_bytes_after_the_tag() {
        let bytes = backend_key_data(7, -3);
        assert_eq!(
            &bytes[..],
            &[b'K', 0, 0, 0, 12, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xfd]
        );
    }
}
