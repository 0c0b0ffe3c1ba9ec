//! Subcommands. Each returns `anyhow::Result` with context; `main` prints the chain.

mod access;
mod admin_client;
mod approvals;
mod audit;
mod audit_human;
mod demo;
mod fd_limit;
mod init;
mod keys;
mod plugins;
mod serve;
mod token;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Just-in-time access gateway for Postgres"
)]
pub struct Cli {
    /// Log line format on stderr (level with RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Write a commented starter configuration and a fresh signing key into a directory.
    Init {
        /// Where to write `sluice.toml` and `signing.pem` (created if missing; existing files
        /// are never overwritten).
        #[arg(default_value = "./sluice")]
        dir: PathBuf,
    },
    /// Run the gateway.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start a throwaway Postgres with sample data and a gateway in front of it, and print the
    /// psql command line to connect. Ctrl-C stops and removes everything.
    Demo {
        /// Port for the gateway (default: a free one).
        #[arg(long)]
        port: Option<u16>,
        /// Directory holding the built stock plugins (`cargo xtask plugins --out DIR`).
        #[arg(long)]
        plugins: Option<PathBuf>,
    },
    /// Just-in-time access: exchange this workload's identity for a token (admin API).
    Access {
        #[command(subcommand)]
        command: access::AccessCommand,
    },
    /// The approval queue: list, show, approve and deny held statements (admin API).
    Approvals(approvals::ApprovalsArgs),
    /// The audit log: verify its integrity, read it.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Signing keys.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Plugins: list what a plugin directory loads; check one plugin on a statement.
    Plugins {
        #[command(subcommand)]
        command: plugins::PluginsCommand,
    },
    /// Tokens.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
}

impl Cli {
    /// The log level without RUST_LOG: `info` for what runs a gateway, `warn` for one-shot
    /// commands, whose output is their answer (a plugin's "loaded" line is noise there).
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Serve { .. } | Command::Demo { .. } => "info",
            _ => "warn",
        }
    }
}

pub fn init_tracing(format: LogFormat, default_level: &str) {
    // The MCP SDK logs every request it serves (and the session ids it hands out) at info:
    // the gateway's own lines say what matters.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default_level},rmcp=warn"))
    });
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only where a terminal shows them, never in a file or a pipe.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init { dir } => init::run(&dir),
        Command::Serve { config } => serve::run(&config).await,
        Command::Demo { port, plugins } => demo::run(port, plugins).await,
        Command::Access { command } => access::run(command).await,
        Command::Approvals(args) => approvals::run(args).await,
        Command::Audit { command } => audit::run(command).await,
        Command::Keys { command } => keys::run(command),
        Command::Token { command } => token::run(command).await,
        Command::Plugins { command } => plugins::run(command).await,
    }
}
