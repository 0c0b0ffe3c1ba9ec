use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use sluice::config::Config;
use sluice::identity::TokenAuthority;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Mint a token and print it, and nothing else, on stdout.
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
    },
}

pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Mint {
            config,
            subject,
            database,
            ttl,
            groups,
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
            let token = authority
                .mint(&subject, &database, &groups, ttl)
                .context("minting the token")?;
            println!("{token}");
            Ok(())
        }
    }
}
