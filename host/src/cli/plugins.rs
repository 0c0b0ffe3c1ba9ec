//! `sluice plugins list | check`: what a plugin directory loads, and what one plugin makes of a
//! statement before it is deployed.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;
use sluice::analysis::{Ref, Statement, analyze_uncached};
use sluice::approvals::Routing;
use sluice::config::Config;
use sluice::identity::SessionInfo;
use sluice::plugins::{Limits, PluginHost, SessionMaskers, SessionPlugins, wit};
use sluice::policy::{self, Verdict};

#[derive(Subcommand)]
pub enum PluginsCommand {
    /// Load the configured plugin directory and show what would serve and what fails.
    List {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run one plugin on a statement, without a database: the analysis, then the policy's
    /// decision, the masking plan or the approval route. Exit status 1 when a policy denies.
    Check {
        /// The component to check.
        file: PathBuf,
        /// The statement text.
        #[arg(long)]
        sql: String,
        /// The session's subject, as a token would carry it.
        #[arg(long, default_value = "agent")]
        subject: String,
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Manifest to use (default: the `.toml` beside FILE, if any).
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
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
            json,
        } => check(file, sql, subject, groups, manifest, json).await,
    }
}

async fn check(
    file: PathBuf,
    sql: String,
    subject: String,
    groups: Vec<String>,
    manifest: Option<PathBuf>,
    as_json: bool,
) -> anyhow::Result<()> {
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .context("FILE has no name")?;
    let dir = tempfile::tempdir()?;
    std::fs::copy(&file, dir.path().join(format!("{name}.wasm")))
        .with_context(|| format!("reading {}", file.display()))?;
    let manifest = manifest.or_else(|| Some(file.with_extension("toml")).filter(|p| p.is_file()));
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
    let info = SessionInfo {
        id: 0,
        subject,
        groups: groups.into_iter().filter(|g| !g.is_empty()).collect(),
        database: "app".into(),
        token_id: "check".into(),
        client_addr: "127.0.0.1:0".into(),
        application_name: None,
        read_only: false,
        actor: None,
        minted: None,
        idp: None,
        via: None,
    };
    let set = host.current();
    let mut outcome =
        json!({"plugin": name, "statements": statements.iter().map(summary).collect::<Vec<_>>()});
    let mut denied = false;
    if !set.policies.is_empty() {
        let mut instances = SessionPlugins::new(host.clone());
        let verdict = policy::decide(&set, &mut instances, &info, &statements, &[]).await;
        denied = matches!(verdict, Verdict::Deny(_));
        outcome["decision"] = match verdict {
            Verdict::Allow => json!({"decision": "allow"}),
            Verdict::Deny(d) => json!({"decision": "deny", "reason": d.reason}),
            Verdict::RequireApproval(d) => {
                json!({"decision": "require-approval", "reason": d.reason})
            }
        };
    }
    if !set.maskers.is_empty() {
        let mut maskers = SessionMaskers::new(host.clone());
        let mut plan = Vec::new();
        for statement in statements.iter() {
            let columns = referenced_columns(statement);
            let lowered = sluice::plugins::LazyStatement::new(Some(statement));
            for plugin in &set.maskers {
                let masks = maskers
                    .plan(plugin, &info, &lowered, &columns)
                    .await
                    .map_err(|e| anyhow::anyhow!("masking plugin failed: {e}"))?;
                let masks = masks.unwrap_or_else(|| vec![wit::Mask::Keep; columns.len()].into());
                for (column, mask) in columns.iter().zip(masks.iter()) {
                    let source = column.source.as_ref().expect("built with a source");
                    plan.push(json!({
                        "column": format!("{}.{}", source.table, source.column),
                        "mask": format!("{mask:?}").to_lowercase().trim_start_matches("mask::").to_owned(),
                    }));
                }
            }
        }
        outcome["masking"] = json!(plan);
    }
    if !set.approvals.is_empty() {
        let request = wit::ApprovalRequest {
            id: "apr-check".into(),
            session: sluice::plugins::convert::session(&info),
            statements: statements
                .iter()
                .map(|s| sluice::plugins::convert::statement(s, &[]))
                .collect(),
            text: sql.clone(),
            plugin: "check".into(),
            reason: "checked by sluice plugins check".into(),
        };
        outcome["route"] = match sluice::approvals::route(
            &host,
            &set,
            &request,
            &sluice::plugins::CallCatalog::of(statements.iter()),
        )
        .await
        {
            Ok(Routing::Default) => json!({"route": "default ([approvals] route)"}),
            Ok(Routing::Ask(route)) => json!({
                "route": "ask",
                "groups": route.approver_groups,
                "approvals_needed": route.approvals_needed,
                "timeout_seconds": route.timeout.map(|t| t.as_secs()),
            }),
            Ok(Routing::Decided {
                approve, reason, ..
            }) => json!({
                "route": if approve { "auto-approve" } else { "auto-deny" },
                "reason": reason,
            }),
            Err(e) => json!({"route": "refused", "reason": e.to_string()}),
        };
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        print_human(&outcome);
    }
    if denied {
        std::process::exit(1);
    }
    Ok(())
}

/// The analysis as plugins see it, readably.
fn summary(statement: &Statement) -> serde_json::Value {
    let tables =
        |t: &[sluice::analysis::TableRef]| t.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    json!({
        "text": statement.text,
        "kind": statement.kind.label(),
        "command": statement.command,
        "wrapper": statement.wrapper.map(|w| w.label()),
        "fingerprint": format!("{:016x}", statement.fingerprint),
        "tables_read": tables(&statement.tables_read),
        "tables_written": tables(&statement.tables_written),
        "functions": statement.functions,
        "settings": statement.settings.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        "writes": statement.writes,
        "unfiltered_write": statement.unfiltered_write,
        "has_where": statement.has_where,
    })
}

/// The columns a statement reads in its values, as result columns of the first table it reads
/// (without a database the catalog is unknown: good enough to see what a rule masks).
fn referenced_columns(statement: &Statement) -> Vec<wit::Column> {
    let table = statement
        .tables_read
        .first()
        .or(statement.tables_written.first());
    let Some(table) = table else {
        return Vec::new();
    };
    statement
        .lineage
        .all
        .iter()
        .filter_map(|r| match r {
            Ref::Column(name) => Some(name.clone()),
            Ref::WholeRow => None,
        })
        .map(|column| wit::Column {
            name: column.clone(),
            source: Some(wit::ColumnSource {
                schema: table.schema.clone().unwrap_or_else(|| "public".into()),
                table: table.name.clone(),
                column,
            }),
            derived_from: Vec::new(),
            type_oid: 25,
            format: wit::ValueFormat::Text,
        })
        .collect()
}

fn print_human(outcome: &serde_json::Value) {
    for statement in outcome["statements"].as_array().into_iter().flatten() {
        let list = |field: &str| {
            let items: Vec<String> = statement[field]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            if items.is_empty() {
                "-".to_owned()
            } else {
                items.join(", ")
            }
        };
        println!(
            "statement:      {}",
            statement["text"].as_str().unwrap_or_default()
        );
        let wrapper = statement["wrapper"]
            .as_str()
            .map(|w| format!(" (inside {w})"))
            .unwrap_or_default();
        println!(
            "  kind:         {} ({}){wrapper}",
            statement["kind"].as_str().unwrap_or_default(),
            statement["command"].as_str().unwrap_or_default()
        );
        println!(
            "  fingerprint:  {}",
            statement["fingerprint"].as_str().unwrap_or_default()
        );
        println!("  reads:        {}", list("tables_read"));
        println!("  writes to:    {}", list("tables_written"));
        println!("  functions:    {}", list("functions"));
        println!("  settings:     {}", list("settings"));
        println!(
            "  writes: {}   unfiltered write: {}   has WHERE: {}",
            statement["writes"], statement["unfiltered_write"], statement["has_where"]
        );
    }
    if let Some(decision) = outcome.get("decision") {
        match decision["reason"].as_str() {
            Some(reason) => println!(
                "decision:       {} ({reason})",
                decision["decision"].as_str().unwrap_or_default()
            ),
            None => println!(
                "decision:       {}",
                decision["decision"].as_str().unwrap_or_default()
            ),
        }
    }
    if let Some(plan) = outcome["masking"].as_array() {
        if plan.is_empty() {
            println!("masking:        no column of a table is read");
        }
        for column in plan {
            println!(
                "masking:        {} -> {}",
                column["column"].as_str().unwrap_or_default(),
                column["mask"].as_str().unwrap_or_default()
            );
        }
    }
    if let Some(route) = outcome.get("route") {
        println!("route:          {route}");
    }
}
