//! `sluice init DIR`: a commented starter configuration and a fresh signing key, so that a new
//! user has a working file to edit instead of a reference page to assemble one from.

use std::path::Path;

use anyhow::Context;

/// The starter configuration `init` writes.
pub const STARTER: &str = include_str!("starter.toml");

pub fn run(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let config = dir.join("sluice.toml");
    let key = dir.join("signing.pem");
    for existing in [&config, &key] {
        anyhow::ensure!(
            !existing.exists(),
            "{} already exists; sluice init never overwrites",
            existing.display()
        );
    }
    sluice::identity::SigningKey::generate()?
        .write_new(&key)
        .with_context(|| format!("writing {}", key.display()))?;
    std::fs::write(&config, STARTER).with_context(|| format!("writing {}", config.display()))?;
    println!(
        "Wrote {config} and {key}.\n\n\
         Edit [[upstream]] to point at your database (the role Sluice logs in as, and where its\n\
         password comes from), then:\n\n  \
         SLUICE_UPSTREAM_PASSWORD=... sluice serve --config {config}\n  \
         sluice token mint --config {config} --subject agent-7 --database app --ttl 5m",
        config = config.display(),
        key = key.display(),
    );
    Ok(())
}
