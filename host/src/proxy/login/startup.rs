//! The first packets of a client connection: SSLRequest, GSSENCRequest, CancelRequest or a
//! StartupMessage, read before any protocol framing with type bytes applies.

use bytes::Buf;
use tokio::io::{AsyncRead, AsyncReadExt};

const SSL_REQUEST: u32 = 80877103;
const GSSENC_REQUEST: u32 = 80877104;
const CANCEL_REQUEST: u32 = 80877102;
/// Postgres' own limit for packets before authentication (MAX_STARTUP_PACKET_LENGTH).
const MAX_STARTUP_PACKET: usize = 10000;

/// What a client asked for in its first packet.
#[derive(Debug, PartialEq, Eq)]
pub enum InitialRequest {
    Ssl,
    GssEnc,
    Cancel {
        pid: i32,
        secret: i32,
    },
    Startup {
        major: u16,
        minor: u16,
        params: Vec<(String, String)>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("invalid startup packet length {0}")]
    BadLength(usize),
    #[error("malformed startup packet: {0}")]
    Malformed(&'static str),
}

/// Reads one initial packet.
pub async fn read_initial<R: AsyncRead + Unpin>(
    stream: &mut R,
) -> Result<InitialRequest, StartupError> {
    let len = stream.read_u32().await? as usize;
    if !(8..=MAX_STARTUP_PACKET).contains(&len) {
        return Err(StartupError::BadLength(len));
    }
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body).await?;
    parse_initial(&body)
}

fn parse_initial(body: &[u8]) -> Result<InitialRequest, StartupError> {
    let mut buf = body;
    let code = buf.get_u32();
    match code {
        SSL_REQUEST if buf.is_empty() => Ok(InitialRequest::Ssl),
        GSSENC_REQUEST if buf.is_empty() => Ok(InitialRequest::GssEnc),
        CANCEL_REQUEST if buf.len() == 8 => Ok(InitialRequest::Cancel {
            pid: buf.get_i32(),
            secret: buf.get_i32(),
        }),
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => Err(StartupError::Malformed(
            "request packet has the wrong length",
        )),
        _ => Ok(InitialRequest::Startup {
            major: (code >> 16) as u16,
            minor: (code & 0xffff) as u16,
            params: parse_params(buf)?,
        }),
    }
}

fn parse_params(mut buf: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    let mut params = Vec::new();
    loop {
        let key = take_cstring(&mut buf)?;
        if key.is_empty() {
            break;
        }
        let value = take_cstring(&mut buf)?;
        params.push((key, value));
    }
    if !buf.is_empty() {
        return Err(StartupError::Malformed("bytes after the parameter list"));
    }
    Ok(params)
}

fn take_cstring(buf: &mut &[u8]) -> Result<String, StartupError> {
    let end = buf
        .iter()
        .position(|&b| b == 0)
        .ok_or(StartupError::Malformed("unterminated string"))?;
    let s = std::str::from_utf8(&buf[..end])
        .map_err(|_| StartupError::Malformed("parameter is not UTF-8"))?
        .to_owned();
    *buf = &buf[end + 1..];
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: u32, rest: &[u8]) -> Vec<u8> {
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(rest);
        body
    }

    #[test]
    fn startup_parameters_are_parsed_in_order() {
        let body = packet(196608, b"user\0agent\0database\0app\0\0");
        assert_eq!(
            parse_initial(&body).unwrap(),
            InitialRequest::Startup {
                major: 3,
                minor: 0,
                params: vec![
                    ("user".into(), "agent".into()),
                    ("database".into(), "app".into())
                ],
            }
        );
    }

    #[test]
    fn cancel_request_carries_pid_and_secret() {
        let mut rest = 42i32.to_be_bytes().to_vec();
        rest.extend_from_slice(&(-7i32).to_be_bytes());
        assert_eq!(
            parse_initial(&packet(CANCEL_REQUEST, &rest)).unwrap(),
            InitialRequest::Cancel {
                pid: 42,
                secret: -7
            }
        );
    }

    #[test]
    fn unterminated_parameter_list_is_malformed() {
        assert!(parse_initial(&packet(196608, b"user\0agent")).is_err());
    }
}
