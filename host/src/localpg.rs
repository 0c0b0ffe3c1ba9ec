//! A throwaway Postgres from the system's binaries, for `sluice demo`, the test suite and the
//! benchmarks: initdb into a temporary directory, a free loopback port, SCRAM on TCP, TLS on.
//! As root it runs Postgres as the `postgres` user, since Postgres refuses to run as root.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

const INSTALL_HINT: &str = "install the PostgreSQL server (Debian/Ubuntu: `apt-get install postgresql`) \
     or put the directory holding initdb and postgres on PATH";

#[derive(Debug, thiserror::Error)]
pub enum LocalPgError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found via `pg_config --bindir` or PATH: {INSTALL_HINT}"
    )]
    BinariesNotFound,
    #[error(
        "running as root, but there is no `postgres` user to run Postgres as: {INSTALL_HINT} (its package creates that user)"
    )]
    NoPostgresUser,
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{command} failed:\n{output}")]
    Command { command: String, output: String },
    #[error("postgres did not become ready within {timeout:?}; its log:\n{log}")]
    NotReady { timeout: Duration, log: String },
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("setup query failed: {0}")]
    Setup(#[from] tokio_postgres::Error),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalPgError {
    let what = what.into();
    move |source| LocalPgError::Io { what, source }
}

/// How to set the server up.
#[derive(Debug, Clone, Default)]
pub struct LocalPostgresOptions {
    /// pg_hba.conf lines placed before the default `host all all ... scram-sha-256` lines.
    pub hba_lines: Vec<String>,
    /// Extra `postgresql.conf` settings.
    pub settings: Vec<(String, String)>,
}

/// A running throwaway Postgres. Dropping it stops the server and deletes its files.
pub struct LocalPostgres {
    root: PathBuf,
    port: u16,
    password: String,
    child: Child,
    log: Arc<Mutex<VecDeque<String>>>,
}

/// The superuser created by initdb.
pub const SUPERUSER: &str = "postgres";

impl LocalPostgres {
    /// initdb, configure, start, and wait for "ready to accept connections". Blocking.
    pub fn start(options: &LocalPostgresOptions) -> Result<LocalPostgres, LocalPgError> {
        let bindir = find_bindir()?;
        let run_as = run_as_user()?;
        sweep_stale_clusters();
        let root = tempfile::Builder::new()
            .prefix("sluice-pg-")
            .tempdir()
            .map_err(io("creating a temporary directory"))?
            .keep();
        let mut guard = DirGuard(Some(root.clone()));
        let data = root.join("data");
        let password = uuid::Uuid::new_v4().simple().to_string();
        let pwfile = root.join("pwfile");
        std::fs::write(&pwfile, &password).map_err(io("writing pwfile"))?;
        chown_all(&root, run_as)?;

        let output = command(&bindir.join("initdb"), run_as)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                SUPERUSER,
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .map_err(io("running initdb"))?;
        if !output.status.success() {
            return Err(LocalPgError::Command {
                command: "initdb".into(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
            });
        }

        let cert = crate::tls::generate_self_signed(&["localhost", "127.0.0.1"])?;
        std::fs::write(data.join("server.crt"), &cert.cert_pem)
            .map_err(io("writing server.crt"))?;
        crate::tls::write_private(&data.join("server.key"), &cert.key_pem)?;
        std::fs::write(root.join("ca.crt"), &cert.cert_pem).map_err(io("writing ca.crt"))?;

        let port = free_port()?;
        let mut conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n\
             ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
             max_connections = 200\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             lc_messages = 'C'\n"
        );
        for (k, v) in &options.settings {
            conf.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
        }
        append(&data.join("postgresql.conf"), &conf)?;
        let mut hba = options.hba_lines.join("\n");
        hba.push_str(
            "\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n",
        );
        std::fs::write(data.join("pg_hba.conf"), hba).map_err(io("writing pg_hba.conf"))?;
        chown_all(&root, run_as)?;

        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (child, ready) = spawn_postgres(&bindir.join("postgres"), &data, run_as, log.clone())?;
        let mut server = LocalPostgres {
            root: guard.0.take().unwrap_or_default(),
            port,
            password,
            child,
            log,
        };
        let timeout = Duration::from_secs(60);
        match ready.recv_timeout(timeout) {
            Ok(true) => Ok(server),
            _ => {
                let _ = server.child.kill();
                Err(LocalPgError::NotReady {
                    timeout,
                    log: server.log_tail(),
                })
            }
        }
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The server's self-signed certificate, usable as a CA file for `verify-full`.
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.crt")
    }

    /// A directory next to the cluster for the caller's own files, removed with it.
    pub fn scratch_dir(&self) -> PathBuf {
        self.root.clone()
    }

    /// The last lines Postgres logged.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// A superuser connection to `database` over TCP without TLS.
    pub async fn superuser_client(
        &self,
        database: &str,
    ) -> Result<tokio_postgres::Client, LocalPgError> {
        let (client, connection) = tokio_postgres::Config::new()
            .host(self.host())
            .port(self.port)
            .user(SUPERUSER)
            .password(&self.password)
            .dbname(database)
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown; nothing in a throwaway cluster needs a checkpoint.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGQUIT);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Removes clusters left behind by processes that ended without running destructors (a test
/// binary's shared server dies with the binary through its parent-death signal, but its files
/// stay): older than ten minutes and with no live postmaster.
fn sweep_stale_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_ours = entry
            .file_name()
            .to_string_lossy()
            .starts_with("sluice-pg-");
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(600));
        if !is_ours || !old {
            continue;
        }
        let alive = std::fs::read_to_string(path.join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

struct DirGuard(Option<PathBuf>);

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn append(path: &Path, text: &str) -> Result<(), LocalPgError> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(io(format!("appending to {}", path.display())))
}

/// The directory holding initdb and postgres.
pub fn find_bindir() -> Result<PathBuf, LocalPgError> {
    find_dir_with(&["initdb", "postgres"]).ok_or(LocalPgError::BinariesNotFound)
}

/// A Postgres program (psql, pgbench, ...), looked up where [`find_bindir`] looks.
pub fn find_program(name: &str) -> Option<PathBuf> {
    find_dir_with(&[name]).map(|dir| dir.join(name))
}

/// The first directory holding all of `programs`: `pg_config --bindir`, then PATH, then
/// Debian's versioned directories (Debian keeps server binaries off PATH; newest wins).
fn find_dir_with(programs: &[&str]) -> Option<PathBuf> {
    let has_all = |dir: &Path| programs.iter().all(|p| dir.join(p).is_file());
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_all(&dir) {
            return Some(dir);
        }
    }
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| has_all(dir));
    let debian = || {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
            .filter(|(_, dir)| has_all(dir))
            .collect();
        versions.sort();
        versions.pop().map(|(_, dir)| dir)
    };
    on_path.or_else(debian)
}

/// Postgres refuses to run as root; as root, run it as the `postgres` user.
fn run_as_user() -> Result<Option<(u32, u32)>, LocalPgError> {
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = c"postgres";
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(LocalPgError::NoPostgresUser);
    }
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

fn chown_all(path: &Path, run_as: Option<(u32, u32)>) -> Result<(), LocalPgError> {
    let Some((uid, gid)) = run_as else {
        return Ok(());
    };
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(io(format!("chown {}", path.display())))?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io(format!("reading {}", path.display())))? {
            let entry = entry.map_err(io("reading a directory entry"))?;
            chown_all(&entry.path(), run_as)?;
        }
    }
    Ok(())
}

fn command(program: &Path, run_as: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(program);
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
    }
    cmd.env("LC_ALL", "C");
    cmd
}

/// Starts postgres from a thread that lives as long as the process, with a parent-death signal,
/// so the server dies with the process that started it even when no destructor runs (a test
/// binary's statics, a killed demo). The signal is tied to the forking thread, hence the
/// dedicated thread.
fn spawn_postgres(
    program: &Path,
    data: &Path,
    run_as: Option<(u32, u32)>,
    log: Arc<Mutex<VecDeque<String>>>,
) -> Result<(Child, mpsc::Receiver<bool>), LocalPgError> {
    let mut cmd = command(program, run_as);
    cmd.arg("-D")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // A session of its own: Ctrl-C or a closed terminal signals the process that
            // started it, which stops its gateway first (clients get their FATAL) and then it.
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (child_tx, child_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("postgres-parent".into())
        .spawn(move || {
            let _ = child_tx.send(cmd.spawn());
            loop {
                std::thread::park();
            }
        })
        .map_err(io("spawning the postgres parent thread"))?;
    let mut child = child_rx
        .recv()
        .map_err(|_| LocalPgError::Io {
            what: "starting postgres".into(),
            source: std::io::Error::other("parent thread died"),
        })?
        .map_err(io("starting postgres"))?;
    let stderr = child.stderr.take().ok_or_else(|| LocalPgError::Io {
        what: "reading postgres output".into(),
        source: std::io::Error::other("no stderr pipe"),
    })?;
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("postgres-log".into())
        .spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("ready to accept connections")
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(true);
                }
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                if log.len() == 200 {
                    log.pop_front();
                }
                log.push_back(line);
            }
            if let Some(tx) = ready_tx {
                let _ = tx.send(false);
            }
        })
        .map_err(io("spawning the postgres log reader"))?;
    Ok((child, ready_rx))
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16, LocalPgError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io("finding a free port"))
}
