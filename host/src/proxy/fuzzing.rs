//! Entry points for the fuzz targets in `host/fuzz`: the gateway's decoders and its relay fed
//! arbitrary bytes, without sockets. Not an API for anything else; it lives in the library so
//! the targets reach private code and so clippy and the unit tests keep it compiling.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use super::login::startup::{InitialRequest, read_initial};
use super::login::startup_params::ClientStartup;
use super::session::{self, Idle};
use super::shared::Shared;
use crate::analysis::{Analyzer, Statement, analyze_uncached};
use crate::config::Config;
use crate::identity::SessionInfo;
use crate::identity::SigningKey;
use crate::wire::frame::{FrameReader, FrameWriter};

/// A logged-in session's identity for relays without a login: subject `subject`, database
/// `app`, nothing else.
pub fn session_info(subject: &str) -> SessionInfo {
    SessionInfo {
        id: 1,
        subject: subject.into(),
        groups: vec!["agents".into()],
        database: "app".into(),
        token_id: "t".into(),
        client_addr: "127.0.0.1:1".into(),
        application_name: None,
        read_only: false,
        actor: None,
        minted: None,
        idp: None,
        via: None,
    }
}

/// Largest message the targets accept (small, so inputs reach the decoders quickly).
const MAX_MESSAGE: usize = 64 * 1024;

/// A client's first packets: SSLRequest, CancelRequest, StartupMessage, and the startup
/// parameter checks that decide what reaches Postgres.
pub fn startup_packet(data: &[u8]) {
    let mut input = data;
    loop {
        match now(read_initial(&mut input)) {
            Ok(InitialRequest::Startup { params, .. }) => {
                if let Ok(startup) = ClientStartup::from_params(params) {
                    let upstream =
                        startup.upstream_params("subject", "role", "db", Duration::from_secs(300));
                    assert!(
                        upstream.iter().any(|(k, _)| k == "application_name"),
                        "the upstream always learns who acts"
                    );
                }
                return;
            }
            Ok(_) => continue,
            Err(_) => return,
        }
    }
}

/// Client messages after login: framing with the type check, the fields the gate reads
/// (query text, Parse, Bind parameters) and statement analysis. Also checks that the analysis
/// cache never answers differently from a fresh parse: a shape-cache hit that lost a table
/// would let a statement past a policy.
pub fn client_messages(data: &[u8]) {
    let analyzer = Analyzer::new(64);
    let mut reader =
        FrameReader::with_buffer(tokio::io::empty(), BytesMut::from(data), MAX_MESSAGE)
            .accepting(session::client_may_send);
    while let Ok(Some(frame)) = reader.try_next() {
        let sql = match frame.tag() {
            b'Q' => crate::wire::frontend::cstr(frame.body()).0,
            b'P' => crate::wire::frontend::cstr(crate::wire::frontend::cstr(frame.body()).1).0,
            b'B' => {
                let _ = crate::wire::frontend::bind_params(frame.body());
                None
            }
            _ => None,
        };
        if let Some(sql) = sql {
            let cached = analyzer.analyze(sql);
            if let (Ok(cached), Ok(fresh)) = (cached, analyze_uncached(sql)) {
                assert_same_facts(sql, &cached, &fresh);
            }
        }
    }
}

fn assert_same_facts(sql: &str, cached: &[Statement], fresh: &[Statement]) {
    assert_eq!(cached.len(), fresh.len(), "statement count for {sql:?}");
    for (c, f) in cached.iter().zip(fresh) {
        let mut facts = (*c.facts).clone();
        // Shape ids are handed out by the cache; a fresh parse has none.
        facts.shape = None;
        assert_eq!(
            facts, *f.facts,
            "cached analysis differs from a fresh parse for {sql:?}"
        );
        assert_eq!(c.text, f.text, "statement text for {sql:?}");
    }
}

/// A gateway configuration with one upstream that is never dialled: the targets hand it
/// in-memory streams instead.
pub struct Fixture {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// `plugins`: a plugin directory (e.g. the stock plugins with their manifests), so the
    /// relay runs the policy pipeline too.
    pub fn new(plugins: Option<&Path>) -> Fixture {
        let dir = tempfile::tempdir().expect("temporary directory");
        SigningKey::generate()
            .and_then(|key| key.write_new(&dir.path().join("signing.pem")))
            .expect("signing key");
        std::fs::write(dir.path().join("upstream.password"), "fuzz").expect("password file");
        let plugins = plugins.map_or(String::new(), |p| {
            format!("[plugins]\ndir = {:?}\n", p.display().to_string())
        });
        let text = format!(
            r#"[server]
listen = "127.0.0.1:0"
data_dir = "./data"
idle_timeout = "0s"
{plugins}
[identity]
signing_key = "./signing.pem"
[[upstream]]
database = "app"
url = "postgres://sluice@127.0.0.1:1/app"
password_file = "./upstream.password"
tls = "disable"
"#
        );
        let config =
            Config::from_toml(&text, &dir.path().join("sluice.toml")).expect("fuzz config");
        let shared = Shared::new(config).expect("fuzz gateway state");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Fixture {
            shared: Arc::new(shared),
            runtime,
            _dir: dir,
        }
    }

    /// The gateway state the targets run against (also what unit tests of the relay need).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The upstream login exchange, with `data` as everything the upstream says.
    pub fn upstream_login(&self, data: &[u8]) {
        let upstream = &self.shared.upstreams["app"];
        let stream = tokio::io::join(data, tokio::io::sink());
        let params = [("user".to_owned(), "sluice".to_owned())];
        let login = upstream.authenticate(stream, &params, MAX_MESSAGE);
        let _ = self
            .runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), login).await })
            .expect("a login over finite input ends");
    }

    /// A logged-in session's relay: the first two bytes split the rest into what the client
    /// sends and what the upstream answers, then both directions run to the end of their input.
    pub fn relay(&self, data: &[u8]) {
        let Some((split, rest)) = data.split_first_chunk::<2>() else {
            return;
        };
        let split = (u16::from_be_bytes(*split) as usize).min(rest.len());
        let (from_client, from_upstream) = rest.split_at(split);
        let info = session_info("fuzz");
        // Wired as a session is: the audit trail and masking (with plugins) read the
        // upstream's bytes too.
        let session::Parts {
            mut gate,
            mut answers,
            notices: mut notices_in,
            results,
            mut masker,
            progress,
        } = session::Parts::new(&self.shared, info, Default::default());
        let mut client_in =
            FrameReader::new(from_client, MAX_MESSAGE).accepting(session::client_may_send);
        let mut upstream_in =
            FrameReader::new(from_upstream, MAX_MESSAGE).accepting(session::upstream_may_send);
        let mut to_upstream = FrameWriter::new(tokio::io::sink());
        let mut to_client = FrameWriter::new(tokio::io::sink());
        let idle = Idle {
            timeout: Duration::ZERO,
            cycles_done: &progress.done,
        };
        let upstream_direction = async {
            let end = session::upstream_to_client(
                &mut upstream_in,
                &mut to_client,
                session::Relayed {
                    answers: &mut answers,
                    progress: &progress,
                    read_only: false,
                },
                &mut notices_in,
                results.as_ref(),
                masker.as_mut(),
            )
            .await;
            // Nothing more will be answered: the client direction, which may wait for answers
            // (after opaque code, at a COPY), runs on to the end of its input as if every
            // request had been answered.
            progress
                .done
                .store(u64::MAX, std::sync::atomic::Ordering::Release);
            progress.answered.notify_waiters();
            end
        };
        let both = async {
            tokio::join!(
                session::client_to_upstream(&mut client_in, &mut to_upstream, &mut gate, idle, &[]),
                upstream_direction,
            )
        };
        self.runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), both).await })
            .expect("a relay over finite input ends");
    }
}

/// Runs a future whose input is all in memory to completion.
fn now<F: Future>(future: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(future)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recorded psql/pgbench traffic and past crashes, through each target: what the fuzz
    /// targets run, kept working without nightly.
    fn seeds(target: &str) -> Vec<Vec<u8>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target);
        let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
            .collect();
        assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
        seeds.sort();
        seeds
    }

    #[test]
    fn recorded_startup_packets_pass_the_startup_target() {
        seeds("startup_packet")
            .iter()
            .for_each(|s| startup_packet(s));
    }

    #[test]
    fn recorded_client_traffic_passes_the_client_messages_target() {
        seeds("client_messages")
            .iter()
            .for_each(|s| client_messages(s));
    }

    #[test]
    fn recorded_logins_and_sessions_pass_the_upstream_and_relay_targets() {
        let fixture = Fixture::new(None);
        seeds("upstream_login")
            .iter()
            .for_each(|s| fixture.upstream_login(s));
        seeds("relay").iter().for_each(|s| fixture.relay(s));
    }
}
