//! `uring-relay MODE LISTEN UPSTREAM`: relays every TCP connection to LISTEN to UPSTREAM, byte
//! for byte, on one thread per CPU, each with a listener of its own (SO_REUSEPORT), as
//! Sluice's workers run. MODE: `uring` (monoio on io_uring), `epoll` (monoio on epoll, the same
//! code) or `tokio` (tokio current-thread runtimes, as Sluice). Nothing is parsed: what is
//! measured is the I/O mechanism.

use std::net::SocketAddr;

const BUFFER: usize = 64 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, listen, upstream] = args.as_slice() else {
        eprintln!("usage: uring-relay uring|epoll|tokio LISTEN UPSTREAM");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().expect("LISTEN is host:port");
    let upstream: SocketAddr = upstream.parse().expect("UPSTREAM is host:port");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let mode = mode.clone();
            std::thread::spawn(move || match mode.as_str() {
                "uring" => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                    .build()
                    .expect("io_uring runtime")
                    .block_on(monoio_relay::serve(listen, upstream)),
                "epoll" => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                    .build()
                    .expect("epoll runtime")
                    .block_on(monoio_relay::serve(listen, upstream)),
                "tokio" => tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                    .expect("tokio runtime")
                    .block_on(tokio_relay::serve(listen, upstream)),
                other => panic!("unknown mode {other}"),
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
}

/// A listening socket with SO_REUSEPORT, so each thread accepts its own share.
fn reuse_port_listener(addr: SocketAddr) -> std::net::TcpListener {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket.set_reuse_port(true).expect("SO_REUSEPORT");
    socket.bind(&addr.into()).expect("bind");
    socket.listen(1024).expect("listen");
    socket.set_nonblocking(true).expect("nonblocking");
    socket.into()
}

mod monoio_relay {
    use super::*;
    use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
    use monoio::net::{TcpListener, TcpStream};

    pub async fn serve(listen: SocketAddr, upstream: SocketAddr) {
        let listener = TcpListener::from_std(reuse_port_listener(listen)).expect("monoio listener");
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            monoio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let up = monoio::spawn(pipe(client_read, server_write));
                pipe(server_read, client_write).await;
                up.await;
            });
        }
    }

    async fn pipe(mut from: impl AsyncReadRent, mut to: impl AsyncWriteRent) {
        let mut buffer = Vec::with_capacity(BUFFER);
        loop {
            let (read, back) = from.read(buffer).await;
            buffer = back;
            match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let (written, back) = to.write_all(buffer).await;
            buffer = back;
            if written.is_err() {
                break;
            }
            buffer.clear();
        }
        let _ = to.shutdown().await;
    }
}

mod tokio_relay {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    pub async fn serve(listen: SocketAddr, upstream: SocketAddr) {
        let listener = TcpListener::from_std(reuse_port_listener(listen)).expect("tokio listener");
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::task::spawn_local(async move {
                        let Ok(server) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        let up = tokio::task::spawn_local(pipe(client_read, server_write));
                        pipe(server_read, client_write).await;
                        let _ = up.await;
                    });
                }
            })
            .await;
    }

    async fn pipe(
        mut from: impl tokio::io::AsyncRead + Unpin,
        mut to: impl tokio::io::AsyncWrite + Unpin,
    ) {
        let mut buffer = vec![0u8; BUFFER];
        loop {
            let n = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if to.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    }
}
