//! Frontend messages as the gateway reads them: zero-copy views over the bytes that arrived.

use bytes::Buf;

/// The longest name Postgres keeps (NAMEDATALEN - 1).
const MAX_NAME_BYTES: usize = 63;

/// `name` as Postgres keeps it: cut to 63 bytes at a character boundary.
pub fn pg_name(name: &str) -> &str {
    if name.len() <= MAX_NAME_BYTES {
        return name;
    }
    let mut end = MAX_NAME_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// The NUL-terminated string at the start of `bytes` (`None` if not UTF-8) and what follows.
pub fn cstr(bytes: &[u8]) -> (Option<&str>, &[u8]) {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let s = std::str::from_utf8(&bytes[..end]).ok();
    (s, bytes.get(end + 1..).unwrap_or_default())
}

/// Parameter values of a Bind message as text (`None` for NULL and binary-format values), or
/// `None` if the message is malformed (Postgres will reject it).
pub fn bind_params(body: &[u8]) -> Option<Vec<Option<String>>> {
    bind_values(body, |_| None)
}

/// Parameter values of a Bind message for the audit record: text values as they are, binary
/// ones as `\x` and hex (NULL stays `None`).
pub fn bind_params_recorded(body: &[u8]) -> Option<Vec<Option<String>>> {
    bind_values(body, |value| {
        Some(format!("\\x{}", crate::audit::record::hex(value)))
    })
}

fn bind_values(
    body: &[u8],
    binary: impl Fn(&[u8]) -> Option<String>,
) -> Option<Vec<Option<String>>> {
    let (_portal, rest) = cstr(body);
    let (_statement, mut rest) = cstr(rest);
    let format_count = wire_count(&mut rest)?;
    if rest.len() < format_count * 2 {
        return None;
    }
    let formats: Vec<i16> = (0..format_count).map(|_| rest.get_i16()).collect();
    let count = wire_count(&mut rest)?;
    let mut params = Vec::with_capacity(count);
    for i in 0..count {
        if rest.len() < 4 {
            return None;
        }
        let len = rest.get_i32();
        let format = match formats.len() {
            0 => 0,
            1 => formats[0],
            _ => *formats.get(i)?,
        };
        if len < 0 {
            params.push(None);
            continue;
        }
        let len = len as usize;
        if rest.len() < len {
            return None;
        }
        let value = &rest[..len];
        params.push(if format == 0 {
            Some(String::from_utf8_lossy(value).into_owned())
        } else {
            binary(value)
        });
        rest.advance(len);
    }
    Some(params)
}

/// An int16 count off the front of `rest`. A negative one is malformed (Postgres refuses the
/// message) and must not become a huge usize here.
fn wire_count(rest: &mut &[u8]) -> Option<usize> {
    if rest.len() < 2 {
        return None;
    }
    usize::try_from(rest.get_i16()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(formats: &[i16], values: &[Option<&[u8]>], count: i16) -> Vec<u8> {
        let mut body = b"\0\0".to_vec();
        body.extend_from_slice(&(formats.len() as i16).to_be_bytes());
        for f in formats {
            body.extend_from_slice(&f.to_be_bytes());
        }
        body.extend_from_slice(&count.to_be_bytes());
        for v in values {
            match v {
                Some(v) => {
                    body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    body.extend_from_slice(v);
                }
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        body
    }

    #[test]
    fn bind_parameters_are_read_as_text_null_or_binary() {
        let body = bind(&[0, 1, 0], &[Some(b"42"), Some(b"\x01"), None], 3);
        assert_eq!(
            bind_params(&body),
            Some(vec![Some("42".to_owned()), None, None])
        );
    }

    /// Found by the client_messages fuzz target: a negative count became a huge capacity and
    /// panicked the session.
    #[test]
    fn bind_with_negative_counts_is_malformed_not_a_panic() {
        assert_eq!(bind_params(&bind(&[], &[], -1)), None);
        let mut negative_formats = b"\0\0".to_vec();
        negative_formats.extend_from_slice(&(-2i16).to_be_bytes());
        assert_eq!(bind_params(&negative_formats), None);
    }

    #[test]
    fn bind_claiming_more_values_than_it_holds_is_malformed() {
        assert_eq!(bind_params(&bind(&[], &[Some(b"1")], 2)), None);
        let mut short = bind(&[], &[Some(b"12345")], 1);
        short.truncate(short.len() - 2);
        assert_eq!(bind_params(&short), None);
    }
}
