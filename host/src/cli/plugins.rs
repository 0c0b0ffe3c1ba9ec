use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use sluice::analysis::analyze_uncached;
use sluice::config::Config;
use sluice::plugins::{Limits, PluginHost, SessionPlugins};
use sluice::policy::{self, SessionInfo, Verdict};

#[derive(Subcommand)]
pub enum PluginsCommand {
    /// Load the configured plugin directory and show what would serve and what fails.
    List {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run one plugin on a statement, without a database, and print analysis and decision.
    Check {
        /// The component to check.
        file: PathBuf,
        /// The statement text.
        #[arg(long)]
        sql: String,
        #[arg(long, default_value = "check")]
        subject: String,
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Manifest to use (default: the `.toml` beside FILE, if any).
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
}

pub async fn run(command: PluginsCommand) -> anyhow::Result<()> {
    match command {
        PluginsCommand::List { config } => {
            let config = Config::load(&config)?;
            let dir = config
                .plugins
                .dir
                .clone()
                .context("no [plugins] dir in the config")?;
            let scratch = tempfile::tempdir()?;
            let host = PluginHost::new(Some(dir), scratch.path().to_owned(), Limits::default())?;
            tokio::task::spawn_blocking({
                let host = host.clone();
                move || host.reload()
            })
            .await??;
            println!("{}", serde_json::to_string_pretty(&host.status())?);
            Ok(())
        }
        PluginsCommand::Check {
            file,
            sql,
            subject,
            groups,
            manifest,
        } => {
            let name = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .context("FILE has no name")?;
            let dir = tempfile::tempdir()?;
            std::fs::copy(&file, dir.path().join(format!("{name}.wasm")))
                .with_context(|| format!("reading {}", file.display()))?;
            let manifest =
                manifest.or_else(|| Some(file.with_extension("toml")).filter(|p| p.is_file()));
            if let Some(manifest) = manifest {
                std::fs::copy(&manifest, dir.path().join(format!("{name}.toml")))
                    .with_context(|| format!("reading {}", manifest.display()))?;
            }
            let host = PluginHost::new(
                Some(dir.path().to_owned()),
                dir.path().join("cache"),
                Limits::default(),
            )?;
            host.reload()?;
            if let Some(failure) = host.status().iter().find_map(|s| s.error.clone()) {
                anyhow::bail!("{} does not load: {failure}", file.display());
            }
            let statements = analyze_uncached(&sql).map_err(|e| anyhow::anyhow!("{e}"))?;
            for statement in statements.iter() {
                println!("{statement:#?}");
            }
            let info = SessionInfo {
                id: 0,
                subject,
                groups: groups.into_iter().filter(|g| !g.is_empty()).collect(),
                database: "check".into(),
                token_id: "check".into(),
                client_addr: "127.0.0.1:0".into(),
                application_name: None,
            };
            let mut instances = SessionPlugins::new(host.clone());
            let verdict =
                policy::decide(&host.current(), &mut instances, &info, &statements, &[]).await;
            match verdict {
                Verdict::Allow => println!("decision: allow"),
                Verdict::Deny(d) => println!("decision: deny ({}: {})", d.plugin, d.reason),
                Verdict::RequireApproval(d) => {
                    println!("decision: require-approval ({}: {})", d.plugin, d.reason)
                }
            }
            Ok(())
        }
    }
}
