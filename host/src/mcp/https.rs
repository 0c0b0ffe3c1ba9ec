//! The MCP listener on an address other people's machines reach: HTTPS with the gateway's own
//! certificate (`[tls]`), as its Postgres clients get. A bearer token is a password; it does
//! not cross a network in clear text.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Serves `router` over TLS on `listener` until `stop`; connections in flight then finish
/// their current request.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: TlsAcceptor,
    stop: CancellationToken,
) {
    loop {
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
        let _ = tcp.set_nodelay(true);
        let (tls, stop) = (tls.clone(), stop.clone());
        let service =
            TowerToHyperService::new(router.clone().layer(axum::Extension(ConnectInfo(peer))));
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE, tls.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "MCP TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let connection = hyper::server::conn::http1::Builder::new()
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
        });
    }
}

/// The gateway's certificate and key, speaking HTTP/1.1 (the Postgres listener's config asks
/// for the `postgresql` ALPN protocol, which an HTTP client does not offer).
pub fn acceptor(postgres: &std::sync::Arc<rustls::ServerConfig>) -> TlsAcceptor {
    let mut config = rustls::ServerConfig::clone(postgres);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.max_fragment_size = None;
    TlsAcceptor::from(std::sync::Arc::new(config))
}

/// Whether the MCP listener on `addr` serves HTTPS: everywhere but loopback, where the bytes
/// never leave the machine (and local MCP clients expect `http://localhost`).
pub fn wanted(addr: SocketAddr) -> bool {
    !addr.ip().is_loopback()
}
