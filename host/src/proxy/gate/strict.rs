//! Client messages are held to their declared structure, as Postgres holds them: a message whose
//! contents disagree with its length (a Query whose string ends before the message does, a
//! Bind with a value running past its end) is a protocol violation, FATAL 08P01, before any
//! judgement. A policy decision must never rest on bytes that the gateway and Postgres could
//! split into different fields, and bytes the gateway does not account for must not reach
//! Postgres.

use bytes::Buf;

/// Why a client message of type `tag` is malformed, if it is.
pub fn malformed(tag: u8, body: &[u8]) -> Option<&'static str> {
    let mut rest = body;
    let whole = match tag {
        // Query: one string, ending the message.
        b'Q' => string(&mut rest).is_some(),
        // Parse: name, query, parameter type count and OIDs.
        b'P' => {
            string(&mut rest).is_some()
                && string(&mut rest).is_some()
                && count(&mut rest).is_some_and(|n| take(&mut rest, n * 4))
        }
        b'B' => bind(&mut rest).is_some(),
        // Execute: portal, row limit.
        b'E' => string(&mut rest).is_some() && take(&mut rest, 4),
        // Describe, Close: 'S' or 'P', then a name.
        b'D' | b'C' => {
            matches!(rest.first(), Some(b'S' | b'P')) && {
                rest.advance(1);
                string(&mut rest).is_some()
            }
        }
        // CopyFail: a message.
        b'f' => string(&mut rest).is_some(),
        // Sync, Flush, CopyDone, Terminate: nothing.
        b'S' | b'H' | b'c' | b'X' => true,
        // CopyData carries anything; FunctionCall is refused whole elsewhere.
        _ => return None,
    };
    (!whole || !rest.is_empty()).then_some(match tag {
        b'Q' => "Query message whose string does not end the message",
        b'P' => "malformed Parse message",
        b'B' => "malformed Bind message",
        b'E' => "malformed Execute message",
        b'D' => "malformed Describe message",
        b'C' => "malformed Close message",
        b'f' => "malformed CopyFail message",
        _ => "message with a body where none belongs",
    })
}

/// A NUL-terminated string off the front of `rest`.
fn string<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let end = rest.iter().position(|&b| b == 0)?;
    let s = &rest[..end];
    rest.advance(end + 1);
    Some(s)
}

/// A non-negative int16 count off the front of `rest`.
fn count(rest: &mut &[u8]) -> Option<usize> {
    if rest.len() < 2 {
        return None;
    }
    usize::try_from(rest.get_i16()).ok()
}

fn take(rest: &mut &[u8], n: usize) -> bool {
    if rest.len() < n {
        return false;
    }
    rest.advance(n);
    true
}

fn bind(rest: &mut &[u8]) -> Option<()> {
    string(rest)?;
    string(rest)?;
    let formats = count(rest)?;
    take(rest, formats * 2).then_some(())?;
    let values = count(rest)?;
    for _ in 0..values {
        if rest.len() < 4 {
            return None;
        }
        let len = rest.get_i32();
        if len >= 0 {
            take(rest, len as usize).then_some(())?;
        } else if len != -1 {
            return None;
        }
    }
    let results = count(rest)?;
    take(rest, results * 2).then_some(())
}

#[cfg(test)]
mod tests {
    use super::malformed;

    #[test]
    fn well_formed_messages_pass() {
        assert_eq!(malformed(b'Q', b"SELECT 1\0"), None);
        assert_eq!(malformed(b'P', b"s\0SELECT $1\0\0\x01\0\0\0\x17"), None);
        assert_eq!(
            malformed(b'B', b"\0s\0\0\x01\0\x01\0\x01\0\0\0\x0242\0\x01\0\0"),
            None
        );
        assert_eq!(malformed(b'B', b"\0\0\0\0\0\x01\xff\xff\xff\xff\0\0"), None);
        assert_eq!(malformed(b'E', b"\0\0\0\0\0"), None);
        assert_eq!(malformed(b'D', b"Ss1\0"), None);
        assert_eq!(malformed(b'S', b""), None);
        assert_eq!(malformed(b'd', b"anything\0at all"), None);
    }

    #[test]
    fn a_query_whose_string_ends_early_is_malformed() {
        assert!(malformed(b'Q', b"SELECT 1\0; DROP TABLE t\0").is_some());
        assert!(malformed(b'Q', b"SELECT 1").is_some());
        assert!(malformed(b'Q', b"SELECT 1\0\0").is_some());
    }

    #[test]
    fn lengths_that_disagree_with_contents_are_malformed() {
        // Parse declaring two parameter types with one present.
        assert!(malformed(b'P', b"\0SELECT 1\0\0\x02\0\0\0\x17").is_some());
        // Bind whose value runs past the end, and one with bytes after its last field.
        assert!(malformed(b'B', b"\0\0\0\0\0\x01\0\0\0\x09ab\0\0").is_some());
        assert!(malformed(b'B', b"\0\0\0\0\0\0\0\0junk").is_some());
        // Negative counts and lengths other than -1.
        assert!(malformed(b'B', b"\0\0\xff\xff\0\0\0\0").is_some());
        assert!(malformed(b'B', b"\0\0\0\0\0\x01\xff\xff\xff\xfe\0\0").is_some());
        assert!(malformed(b'E', b"\0\0\0").is_some());
        assert!(malformed(b'D', b"Xname\0").is_some());
        assert!(malformed(b'S', b"x").is_some());
    }
}
