//! The admin API from a terminal: where the gateway's admin listener is, and one request to it
//! with a Sluice token.

use std::path::Path;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use sluice::config::Config;

/// `host:port` of the admin API: `--server`, or the `[admin] listen` of `--config`.
pub fn address(server: Option<&str>, config: Option<&Path>) -> anyhow::Result<String> {
    match (server, config) {
        (Some(server), _) => Ok(server
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned()),
        (None, Some(file)) => {
            let config = Config::load(file)?;
            let listen = config
                .admin
                .listen
                .with_context(|| format!("{} has no [admin] listen", file.display()))?;
            Ok(listen.to_string())
        }
        (None, None) => bail!("say where the gateway is: --server URL or --config FILE"),
    }
}

pub struct AdminClient {
    /// host:port
    pub address: String,
    pub token: String,
}

impl AdminClient {
    /// One request; a non-2xx answer becomes an error carrying the API's message.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> anyhow::Result<String> {
        let payload = body
            .map(serde_json::to_vec)
            .transpose()?
            .map(|json| ("application/json", json));
        request(&self.address, method, path, Some(&self.token), payload).await
    }
}

/// One request to the admin API at `address`, with a bearer token and a typed body when given;
/// a non-2xx answer becomes an error carrying the API's message (`error`, and an OAuth
/// `error_description`).
pub async fn request(
    address: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> anyhow::Result<String> {
    let (status, text) = answer(address, method, path, token, body).await?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                let error = v["error"].as_str()?;
                Some(match v["error_description"].as_str() {
                    Some(description) => format!("{error}: {description}"),
                    None => error.to_owned(),
                })
            })
            .unwrap_or(text);
        bail!("{status}: {message}");
    }
    Ok(text)
}

/// One request, answered with its status and body whatever the status.
pub async fn answer(
    address: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> anyhow::Result<(hyper::StatusCode, String)> {
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .with_context(|| format!("cannot reach the admin API at {address}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, address);
    if let Some(token) = token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let payload = match body {
        Some((content_type, bytes)) => {
            request = request.header(hyper::header::CONTENT_TYPE, content_type);
            bytes
        }
        None => Vec::new(),
    };
    let response = sender
        .send_request(request.body(Full::new(Bytes::from(payload)))?)
        .await?;
    let status = response.status();
    let text =
        String::from_utf8_lossy(&response.into_body().collect().await?.to_bytes()).into_owned();
    Ok((status, text))
}
