use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use sluice::admin::revocations::{RevocationView, RevokeBody};
use sluice::config::Config;
use sluice::identity::{Minted, TokenAuthority};

use super::admin_client::{self, AdminClient};

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Mint a token with the signing key and print it, and nothing else, on stdout. This is
    /// break-glass: the token names who minted it (the operating-system user and host) and
    /// why, and every session it opens is recorded with that. Workloads and people ask for
    /// tokens with `sluice access request` instead.
    Mint {
        #[arg(long, short)]
        config: PathBuf,
        /// Who the token is for; the client logs in with this as its user name.
        #[arg(long)]
        subject: String,
        /// The database the token is for, as clients name it.
        #[arg(long)]
        database: String,
        /// Lifetime, e.g. 5m, 1h (at most identity.max_ttl).
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Comma-separated groups.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// A read-only grant: Postgres runs its sessions read-only, and nothing may change that.
        #[arg(long)]
        read_only: bool,
        /// Why the signing key is used instead of the token exchange (recorded with every
        /// session the token opens).
        #[arg(long, default_value = "no reason given")]
        reason: String,
    },
    /// Take tokens back: one token, every token of a subject, or every token of an issuer.
    /// Logins with them are refused and live sessions using them end at once.
    #[command(group(clap::ArgGroup::new("what").required(true).multiple(false)))]
    Revoke {
        #[command(flatten)]
        admin: AdminArgs,
        /// One token, by its id (`jti`; the `token_id` of its sessions in the audit log).
        #[arg(long, group = "what")]
        jti: Option<String>,
        /// Every token of this subject.
        #[arg(long, group = "what")]
        subject: Option<String>,
        /// Every token from this issuer.
        #[arg(long, group = "what")]
        issuer: Option<String>,
        /// Why (recorded in the audit log and told to the sessions it ends).
        #[arg(long)]
        reason: String,
        /// How long the revocation lasts (default: identity.max_ttl, the longest a token it
        /// matches may live).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        lasts: Option<Duration>,
    },
    /// The revocations in force.
    Revocations {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Where the admin API is and the admin token to call it with.
#[derive(Args)]
pub struct AdminArgs {
    /// Admin API address, e.g. http://127.0.0.1:6434.
    #[arg(long, conflicts_with = "config")]
    server: Option<String>,
    /// Read the admin listener's address from this gateway config instead.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// A token whose groups include one of `[admin] admin_groups`.
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl AdminArgs {
    fn client(self) -> anyhow::Result<AdminClient> {
        let address = admin_client::address(self.server.as_deref(), self.config.as_deref())?;
        let token = self
            .token
            .context("an admin token is needed: --token or SLUICE_TOKEN")?;
        Ok(AdminClient { address, token })
    }
}

pub async fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Mint {
            config,
            subject,
            database,
            ttl,
            groups,
            read_only,
            reason,
        } => {
            let config = Config::load(&config)?;
            if config.upstream(&database).is_none() {
                anyhow::bail!(
                    "database {database:?} is not configured in {} (no [[upstream]] with that database)",
                    config.source.display()
                );
            }
            let authority = TokenAuthority::from_config(&config.identity)?;
            let groups: Vec<String> = groups.into_iter().filter(|g| !g.is_empty()).collect();
            let minted = Minted {
                by: operator(),
                reason,
            };
            let token = authority
                .mint_break_glass(&subject, &database, &groups, ttl, read_only, minted)
                .context("minting the token")?;
            println!("{token}");
            Ok(())
        }
        TokenCommand::Revoke {
            admin,
            jti,
            subject,
            issuer,
            reason,
            lasts,
        } => {
            let body = RevokeBody {
                jti,
                subject,
                issuer,
                reason,
                for_seconds: lasts.map(|d| d.as_secs().max(1)),
            };
            let answer = admin
                .client()?
                .call("POST", "/v1/revocations", Some(&body))
                .await?;
            let view: RevocationView = serde_json::from_str(&answer)?;
            println!(
                "{}: {} {} revoked until {}",
                view.id,
                view.kind,
                view.value,
                until(view.until)
            );
            Ok(())
        }
        TokenCommand::Revocations { admin, json } => {
            let answer = admin
                .client()?
                .call("GET", "/v1/revocations", None::<&()>)
                .await?;
            if json {
                println!("{answer}");
                return Ok(());
            }
            let list: Vec<RevocationView> = serde_json::from_str(&answer)?;
            if list.is_empty() {
                println!("no revocations in force");
            }
            for view in list {
                println!(
                    "{}  {} {}  by {} until {}: {}",
                    view.id,
                    view.kind,
                    view.value,
                    view.by,
                    until(view.until),
                    view.reason
                );
            }
            Ok(())
        }
    }
}

fn until(unix_seconds: f64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_secs_f64(unix_seconds.max(0.0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Who is minting: the operating-system user (the one behind `sudo`, when there is one) at
/// this host, as the session records will name them.
fn operator() -> String {
    let user = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| format!("uid {}", real_uid()));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    }
}

/// The real user id, from /proc (no libc call needed for a label).
fn real_uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        })
        .unwrap_or_else(|| "?".into())
}
