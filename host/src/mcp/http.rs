//! The MCP listener's connections: HTTP/1.1, over TLS with the gateway's own certificate
//! (`[tls]`) on any address but loopback, as its Postgres clients get — a bearer token is a
//! password and does not cross a network in clear text. A connection that does not send a
//! request's head in time (or idles between requests) is closed, and at most
//! `max_connections` are open at once: a peer that opens connections and sends nothing cannot
//! take the file descriptors the Postgres listener needs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Time to send a request's head, and the longest idle wait between requests.
const HEAD: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` until `stop` (over `tls` when given); connections in flight
/// then finish their current request.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    max_connections: usize,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let slot = tokio::select! {
            () = stop.cancelled() => return,
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
        };
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "MCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small answers go out at once, not after the peer's delayed ACK.
        let _ = tcp.set_nodelay(true);
        let (tls, stop) = (tls.clone(), stop.clone());
        let service =
            TowerToHyperService::new(router.clone().layer(axum::Extension(ConnectInfo(peer))));
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => connection(tcp, service, peer, stop).await,
                Some(tls) => match tokio::time::timeout(HANDSHAKE, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => connection(stream, service, peer, stop).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "MCP TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "MCP TLS handshake timed out"),
                },
            }
        });
    }
}

async fn connection<S, T>(stream: S, service: T, peer: SocketAddr, stop: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    T::Future: Send + 'static,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "MCP connection ended with an error");
    }
}

/// The gateway's certificate and key, speaking HTTP/1.1 (the Postgres listener's config asks
/// for the `postgresql` ALPN protocol, which an HTTP client does not offer).
pub fn acceptor(postgres: &Arc<rustls::ServerConfig>) -> TlsAcceptor {
    let mut config = rustls::ServerConfig::clone(postgres);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.max_fragment_size = None;
    TlsAcceptor::from(Arc::new(config))
}

/// Whether the MCP listener on `addr` serves HTTPS: everywhere but loopback, where the bytes
/// never leave the machine (and local MCP clients expect `http://localhost`).
pub fn wants_tls(addr: SocketAddr) -> bool {
    !addr.ip().is_loopback()
}
