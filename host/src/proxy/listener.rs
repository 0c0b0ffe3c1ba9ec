//! The listener: binds, accepts clients onto the session threads, and drains them on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::DuplexStream;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::identity::SessionInfo;
use crate::services::ServicesError;

use super::login::ClientStream;
use super::session::SessionEnd;
use super::shared::Shared;
use super::{login, session, workers};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Services(#[from] ServicesError),
    #[error("cannot watch the plugin directory: {0}")]
    Watch(String),
    #[error("cannot start session threads: {0}")]
    Workers(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A gateway accepting clients. Dropping it stops everything at once; [`Gateway::shutdown`]
/// stops gracefully.
pub struct Gateway {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    stop_accepting: CancellationToken,
    sessions: TaskTracker,
    accept_loop: tokio::task::JoinHandle<()>,
    /// Owned here, not by the accept loop: sessions outlive accepting during a shutdown.
    _workers: Arc<workers::Workers>,
    plugin_watch: Option<crate::plugins::WatchHandle>,
    /// Stops following the store's revocations when the gateway is dropped.
    _revocation_poll: tokio_util::sync::DropGuard,
}

impl Gateway {
    /// Binds the listener and starts accepting. Returns once the port is bound, so a caller can
    /// connect right away.
    pub async fn start(shared: Shared) -> Result<Gateway, StartError> {
        let addr = shared.config.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let workers = match shared.config.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let workers = Arc::new(workers::Workers::start(workers).map_err(StartError::Workers)?);
        let shared = Arc::new(shared);
        let stop_accepting = CancellationToken::new();
        let sessions = TaskTracker::new();
        let door = Door {
            shared: shared.clone(),
            workers: workers.clone(),
            sessions: sessions.clone(),
        };
        let accept_loop = tokio::spawn(accept_loop(listener, door, stop_accepting.clone()));
        // Revocations made by other gateways sharing the state store (or the CLI) reach this
        // one's sessions too.
        let revocation_poll = CancellationToken::new();
        tokio::spawn(
            shared
                .revocations
                .clone()
                .follow_store(revocation_poll.clone()),
        );
        tokio::spawn(close_revoked_warm(shared.clone(), revocation_poll.clone()));
        let plugin_watch = match &shared.plugins {
            Some(host) => Some(
                crate::plugins::watch(host.clone(), shared.config.plugins.reload_debounce)
                    .map_err(|e| StartError::Watch(e.to_string()))?,
            ),
            None => None,
        };
        tracing::info!(%local_addr, "accepting Postgres clients");
        Ok(Gateway {
            plugin_watch,
            _revocation_poll: revocation_poll.drop_guard(),
            shared,
            local_addr,
            stop_accepting,
            sessions,
            accept_loop,
            _workers: workers,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A door for sessions opened inside the process (the MCP server's).
    pub fn local_door(&self) -> LocalDoor {
        LocalDoor {
            door: Door {
                shared: self.shared.clone(),
                workers: self._workers.clone(),
                sessions: self.sessions.clone(),
            },
            accepting: self.stop_accepting.clone(),
        }
    }

    /// Sessions currently open (logged in or logging in).
    pub fn open_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Asks for a plugin reload (what SIGHUP does); the file watcher does the same by itself.
    pub fn reload_plugins(&self) {
        if let Some(watch) = &self.plugin_watch {
            watch.trigger();
        }
    }

    /// Whether new clients are still accepted.
    pub fn is_accepting(&self) -> bool {
        !self.stop_accepting.is_cancelled()
    }

    /// Stops accepting at once, lets sessions finish for up to `grace`, then ends the rest
    /// with a FATAL 57P01 and waits for them to close.
    pub async fn shutdown(&self, grace: Duration) {
        self.stop_accepting.cancel();
        self.sessions.close();
        let started = Instant::now();
        if tokio::time::timeout(grace, self.sessions.wait())
            .await
            .is_err()
        {
            tracing::info!(
                remaining = self.sessions.len(),
                "shutdown grace period over; closing remaining sessions"
            );
            self.shared.terminate.cancel();
            self.sessions.wait().await;
        }
        tracing::info!(elapsed = ?started.elapsed(), "all sessions closed");
        self.shared.audit.close().await;
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop_accepting.cancel();
        self.shared.terminate.cancel();
        self.accept_loop.abort();
    }
}

/// Where sessions start: on a session thread, in the gateway's session tracker, with the
/// same login and session path whichever door the client came through.
#[derive(Clone)]
struct Door {
    shared: Arc<Shared>,
    workers: Arc<workers::Workers>,
    sessions: TaskTracker,
}

impl Door {
    /// `stream` makes the client's stream on the session thread (a TCP socket must be
    /// registered with that thread's reactor).
    fn open(
        &self,
        peer: String,
        via: Option<&'static str>,
        stream: impl FnOnce() -> std::io::Result<ClientStream> + Send + 'static,
    ) {
        let shared = self.shared.clone();
        let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!(
            "session",
            sluice.session = id,
            client = %peer,
            via = via.unwrap_or("postgres"),
            user = tracing::field::Empty,
            database = tracing::field::Empty,
            subject = tracing::field::Empty,
            token_id = tracing::field::Empty,
        );
        let (worker, assignment) = self.workers.pick();
        let session = async move {
            let _assignment = assignment;
            match stream() {
                Ok(stream) => handle_client(shared, stream, peer, id, via).await,
                Err(e) => tracing::warn!(error = %e, "cannot register a connection"),
            }
        };
        self.sessions.spawn_on(session.instrument(span), worker);
    }
}

/// Opens sessions from inside the process, as the MCP server does for its tool calls: each
/// is a client of the gateway like any other, through login, policy, masking, approvals and
/// audit, its records marked with the door it came through (`via`).
#[derive(Clone)]
pub struct LocalDoor {
    door: Door,
    accepting: CancellationToken,
}

/// Bytes a local session buffers each way before its writer waits for the reader.
const LOCAL_BUFFER: usize = 64 * 1024;

impl LocalDoor {
    /// A new client stream into the gateway; `None` once the gateway stops accepting.
    /// `client_addr` is what the session records as its client's address.
    pub fn connect(&self, via: &'static str, client_addr: String) -> Option<DuplexStream> {
        if self.accepting.is_cancelled() {
            return None;
        }
        let (ours, theirs) = tokio::io::duplex(LOCAL_BUFFER);
        self.door.open(client_addr, Some(via), move || {
            Ok(ClientStream::InProcess(theirs))
        });
        Some(ours)
    }
}

async fn accept_loop(listener: TcpListener, door: Door, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                // The socket moves to a session thread's own reactor.
                let tcp = match tcp.into_std() {
                    Ok(tcp) => tcp,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot hand over an accepted connection");
                        continue;
                    }
                };
                door.open(peer.to_string(), None, move || {
                    TcpStream::from_std(tcp).map(ClientStream::Tcp)
                });
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// How long past `login_timeout` a login may run before it is cut without a word.
const LOGIN_BACKSTOP: Duration = Duration::from_secs(1);

async fn handle_client(
    shared: Arc<Shared>,
    stream: ClientStream,
    peer: String,
    id: u64,
    via: Option<&'static str>,
) {
    if let ClientStream::Tcp(tcp) = &stream {
        let _ = tcp.set_nodelay(true);
    }
    // Held until the connection ends, whichever way.
    let (_slot, open) = shared.limits.connection();
    let over_capacity = open > shared.config.server.max_connections;
    let login_timeout = shared.config.server.login_timeout;
    let established = tokio::select! {
        // login() keeps login_timeout itself (telling the client when it can); this is the
        // backstop for anything slower, such as an upstream login near its own timeout.
        result = tokio::time::timeout(login_timeout + LOGIN_BACKSTOP, login::login(&shared, stream, &peer, via, over_capacity)) => match result {
            Ok(Ok(established)) => established,
            Ok(Err(login::LoginError::CancelHandled)) => return,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "login ended without a session");
                return;
            }
            Err(_) => {
                tracing::info!(timeout = ?login_timeout, "login timed out");
                return;
            }
        },
        () = shared.terminate.cancelled() => return,
    };
    let info = SessionInfo {
        id,
        subject: established.grant.subject.clone(),
        groups: established.grant.groups.clone(),
        database: established.grant.database.clone(),
        token_id: established.grant.token_id.clone(),
        client_addr: peer,
        application_name: established.application_name.clone(),
        read_only: established.grant.read_only,
        idp: established.grant.origin.clone(),
        actor: established.grant.actor.as_ref().map(|a| a.sub.clone()),
        minted: established.grant.minted.clone(),
        via,
    };
    shared.audit.record(crate::audit::Event::SessionStart {
        session: id,
        subject: info.subject.clone(),
        groups: info.groups.clone(),
        token_id: info.token_id.clone(),
        client_addr: info.client_addr.clone(),
        database: info.database.clone(),
        application_name: info.application_name.clone(),
        idp: info.idp.clone(),
        read_only: info.read_only,
        actor: info.actor.clone(),
        minted: info.minted.clone(),
        via,
        upstream_pid: established.upstream.backend_pid,
    });
    let subject = info.subject.clone();
    shared.metrics.sessions.inc();
    shared.metrics.sessions_open.inc();
    let started = Instant::now();
    let (end, statements) = session::run(&shared, established, info).await;
    let duration = started.elapsed();
    shared.metrics.sessions_open.dec();
    shared.audit.record(crate::audit::Event::SessionEnd {
        session: id,
        subject,
        duration_ms: duration.as_millis() as u64,
        statements,
        reason: end.class().to_owned(),
    });
    match &end {
        SessionEnd::ClientTerminated | SessionEnd::ClientDisconnected => {
            tracing::info!(?duration, reason = ?end, "session ended");
        }
        _ => tracing::warn!(?duration, reason = ?end, "session ended"),
    }
}

/// A revoked token's warm upstream connections close as its sessions end: what `DISCARD ALL`
/// leaves on them (an extension's open connection) must not outlive the revocation either.
async fn close_revoked_warm(shared: Arc<Shared>, stop: CancellationToken) {
    let mut changes = shared.revocations.changes();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
        let revoked =
            |_, grant: &crate::identity::Grant| shared.revocations.matching(grant).is_some();
        for upstream in shared.upstreams.values() {
            upstream.warm().close_where(&revoked).await;
        }
    }
}
