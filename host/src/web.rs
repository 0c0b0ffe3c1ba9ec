//! Outbound HTTP(S) for the gateway's own requests (an identity provider's discovery document,
//! keys and token endpoint): one request at a time, bounded in size and time, certificates
//! verified against the Mozilla roots or a configured CA bundle.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("cannot read CA bundle {path}: {why}")]
    CaFile { path: String, why: String },
    #[error("{0}")]
    Request(String),
    #[error("answered {0}")]
    Status(u16),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// TLS for outbound requests: the Mozilla roots, or only the CAs in `ca_file`.
pub fn client_tls(ca_file: Option<&Path>) -> Result<TlsConnector, WebError> {
    let roots = match ca_file {
        None => rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let ca_error = |why: String| WebError::CaFile {
                path: path.display().to_string(),
                why,
            };
            let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
            let mut roots = rustls::RootCertStore::empty();
            for block in pem::parse_many(&pem).map_err(|e| ca_error(e.to_string()))? {
                roots
                    .add(block.contents().to_vec().into())
                    .map_err(|e| ca_error(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(ca_error("no certificate in it".into()));
            }
            roots
        }
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| b.with_root_certificates(roots).with_no_client_auth())
    .expect("ring supports the default protocol versions");
    Ok(TlsConnector::from(Arc::new(config)))
}

/// GETs `url` (http or https), with `bearer` as its `Authorization` when given, and returns the
/// body of a 200 answer of at most `max_bytes`.
pub async fn get(
    url: &url::Url,
    bearer: Option<&str>,
    tls: &TlsConnector,
    max_bytes: usize,
    timeout: Duration,
) -> Result<Bytes, WebError> {
    tokio::time::timeout(timeout, request(url, bearer, None, tls, max_bytes))
        .await
        .map_err(|_| WebError::Timeout(timeout))?
}

/// POSTs `form` (`application/x-www-form-urlencoded`) to `url` and returns the body of a 200
/// answer of at most `max_bytes`.
pub async fn post_form(
    url: &url::Url,
    form: String,
    tls: &TlsConnector,
    max_bytes: usize,
    timeout: Duration,
) -> Result<Bytes, WebError> {
    tokio::time::timeout(timeout, request(url, None, Some(form), tls, max_bytes))
        .await
        .map_err(|_| WebError::Timeout(timeout))?
}

async fn request(
    url: &url::Url,
    bearer: Option<&str>,
    form: Option<String>,
    tls: &TlsConnector,
    max_bytes: usize,
) -> Result<Bytes, WebError> {
    let request_error = |e: &dyn std::fmt::Display| WebError::Request(e.to_string());
    let host = url
        .host_str()
        .ok_or(WebError::Request("the URL has no host".into()))?;
    let port = url
        .port_or_known_default()
        .ok_or(WebError::Request("the URL has no port".into()))?;
    let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| request_error(&e))?;
    let path = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let method = if form.is_some() {
        hyper::Method::POST
    } else {
        hyper::Method::GET
    };
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::ACCEPT, "application/json");
    if let Some(bearer) = bearer {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {bearer}"));
    }
    if form.is_some() {
        request = request.header(
            hyper::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        );
    }
    let request = request
        .body(Full::new(Bytes::from(form.unwrap_or_default())))
        .map_err(|e| request_error(&e))?;
    match url.scheme() {
        "https" => {
            let name = ServerName::try_from(host.to_owned()).map_err(|e| request_error(&e))?;
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|e| request_error(&e))?;
            send(hyper_util::rt::TokioIo::new(stream), request, max_bytes).await
        }
        "http" => send(hyper_util::rt::TokioIo::new(tcp), request, max_bytes).await,
        other => Err(WebError::Request(format!("unsupported scheme {other}"))),
    }
}

async fn send<S>(
    io: S,
    request: hyper::Request<Full<Bytes>>,
    max_bytes: usize,
) -> Result<Bytes, WebError>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let request_error = |e: &dyn std::fmt::Display| WebError::Request(e.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| request_error(&e))?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| request_error(&e))?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(WebError::Status(status));
    }
    let body = Limited::new(response.into_body(), max_bytes)
        .collect()
        .await
        .map_err(|_| WebError::TooLarge(max_bytes))?;
    Ok(body.to_bytes())
}
