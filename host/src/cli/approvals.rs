//! `sluice approvals`: the approval queue from a terminal, through the admin API, as an
//! approver (the token's subject; its groups must include an approver group).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Subcommand};
use sluice::admin::approvals::{ApprovalView, DecisionBody};

use super::admin_client::{self, AdminClient};

#[derive(Args)]
pub struct ApprovalsArgs {
    #[command(subcommand)]
    command: ApprovalsCommand,
    /// Admin API address, e.g. http://127.0.0.1:6434.
    #[arg(long, global = true, conflicts_with = "config")]
    server: Option<String>,
    /// Read the admin listener's address from this gateway config instead.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// An approver token (`sluice token mint --groups approvers ...`).
    #[arg(long, global = true, env = "SLUICE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum ApprovalsCommand {
    /// Requests waiting for a decision.
    List {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One request, whole.
    Show { id: String },
    /// Approve a request (one vote towards its quorum).
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        /// Also let the requester run statements of this fingerprint for this long (e.g. 30m).
        #[arg(long, value_parser = humantime::parse_duration)]
        scope: Option<Duration>,
    },
    /// Deny a request.
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

pub async fn run(args: ApprovalsArgs) -> anyhow::Result<()> {
    let address = admin_client::address(args.server.as_deref(), args.config.as_deref())?;
    let token = args
        .token
        .context("an approver token is needed: --token or SLUICE_TOKEN")?;
    let admin = AdminClient { address, token };
    match args.command {
        ApprovalsCommand::List { json } => {
            let body = admin.call("GET", "/v1/approvals", None::<&()>).await?;
            if json {
                println!("{body}");
                return Ok(());
            }
            let pending: Vec<ApprovalView> = serde_json::from_str(&body)?;
            if pending.is_empty() {
                println!("no pending approval requests");
            }
            for view in pending {
                let shown = &view.display;
                if let Some(access) = &shown.access {
                    println!(
                        "{}  {:>6}  access: {access}; because: {}",
                        view.id,
                        age(view.created),
                        one_line(shown.requester_reason.as_deref().unwrap_or_default(), 80)
                    );
                    continue;
                }
                println!(
                    "{}  {:>6}  {}@{}  {} ({})  {}",
                    view.id,
                    age(view.created),
                    shown.subject,
                    shown.database,
                    shown.plugin,
                    shown.reason,
                    one_line(&shown.statement, 80)
                );
            }
        }
        ApprovalsCommand::Show { id } => {
            let body = admin
                .call("GET", &format!("/v1/approvals/{id}"), None::<&()>)
                .await?;
            print_view(&serde_json::from_str(&body)?);
        }
        ApprovalsCommand::Approve { id, reason, scope } => {
            let body = DecisionBody {
                reason,
                scope_seconds: scope.map(|d| d.as_secs()),
            };
            let answer = admin
                .call("POST", &format!("/v1/approvals/{id}/approve"), Some(&body))
                .await?;
            report(&serde_json::from_str(&answer)?);
        }
        ApprovalsCommand::Deny { id, reason } => {
            let body = DecisionBody {
                reason,
                scope_seconds: None,
            };
            let answer = admin
                .call("POST", &format!("/v1/approvals/{id}/deny"), Some(&body))
                .await?;
            report(&serde_json::from_str(&answer)?);
        }
    }
    Ok(())
}

fn report(view: &ApprovalView) {
    let approvals = view.votes.iter().filter(|v| v.approve).count();
    match view.status.as_str() {
        "pending" => println!(
            "{}: vote recorded, {approvals} of {} approvals",
            view.id, view.approvals_needed
        ),
        status => println!("{}: {status}", view.id),
    }
}

fn print_view(view: &ApprovalView) {
    use sluice::display::line;
    // Agent and plugin text only as the display fields have it (escaped).
    let shown = &view.display;
    println!("id:         {}", view.id);
    println!("status:     {}", view.status);
    println!(
        "requester:  {} (groups: {})",
        shown.subject,
        view.groups
            .iter()
            .map(|g| line(g))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(access) = &shown.access {
        println!("asks for:   {access}");
        println!(
            "because:    {}",
            shown.requester_reason.as_deref().unwrap_or_default()
        );
        println!("policy:     {}: {}", shown.plugin, shown.reason);
    } else {
        print_statement(view);
    }
    println!(
        "approvers:  {} of group {}{}",
        view.approvals_needed,
        shown.approver_groups.join(" | "),
        view.routed_by
            .as_deref()
            .map(|p| format!(" (routed by {})", line(p)))
            .unwrap_or_default()
    );
    if let Some(note) = &shown.note {
        println!("note:       {note}");
    }
    println!("age:        {}", age(view.created));
    for vote in &shown.votes {
        println!("vote:       {vote}");
    }
}

fn age(created: f64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let secs = (now - created).max(0.0) as u64;
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        flat.chars().take(max - 1).chain(['…']).collect()
    }
}

/// The held statement's part of `approvals show`.
fn print_statement(view: &ApprovalView) {
    let shown = &view.display;
    println!(
        "database:   {} (session {})",
        shown.database, view.session_id
    );
    println!("policy:     {}: {}", shown.plugin, shown.reason);
    println!("statement:  {}", shown.statement);
    if !shown.parameters.is_empty() {
        println!("parameters: {}", shown.parameters.join(" "));
    }
    // What names in it mean: it is approved as read after these.
    for (i, setting) in shown.settings.iter().enumerate() {
        let label = if i == 0 { "after:" } else { "" };
        println!("{label:<12}{setting}");
    }
    match &shown.scope {
        Some(scope) => println!("scope:      approving with --scope lets it run: {scope}"),
        None => println!("scope:      none can cover this statement"),
    }
}
