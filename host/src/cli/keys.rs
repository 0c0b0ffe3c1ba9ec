use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use sluice::identity::SigningKey;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Write a new Ed25519 signing key (PKCS#8 PEM, mode 0600). Never overwrites a file.
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Generate { out } => {
            let key = SigningKey::generate().context("generating a key")?;
            key.write_new(&out)?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
    }
}
