//! `sluice approvals`: the approval queue from a terminal, through the admin API, as an
//! approver (the token's subject; its groups must include an approver group).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use sluice::admin::approvals::{ApprovalView, DecisionBody};
use sluice::config::Config;

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
    let address = match (&args.server, &args.config) {
        (Some(server), _) => server
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned(),
        (None, Some(file)) => {
            let config = Config::load(file)?;
            let listen = config
                .admin
                .listen
                .with_context(|| format!("{} has no [admin] listen", file.display()))?;
            listen.to_string()
        }
        (None, None) => bail!("say where the gateway is: --server URL or --config FILE"),
    };
    let token = args
        .token
        .context("an approver token is needed: --token or SLUICE_TOKEN")?;
    let admin = Admin { address, token };
    match args.command {
        ApprovalsCommand::List { json } => {
            let body = admin.call("GET", "/v1/approvals", None).await?;
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
                .call("GET", &format!("/v1/approvals/{id}"), None)
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

struct Admin {
    /// host:port
    address: String,
    token: String,
}

impl Admin {
    /// One request; a non-2xx answer becomes an error carrying the API's message.
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&DecisionBody>,
    ) -> anyhow::Result<String> {
        let tcp = tokio::net::TcpStream::connect(&self.address)
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.address))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        tokio::spawn(connection);
        let payload = body
            .map(serde_json::to_vec)
            .transpose()?
            .unwrap_or_default();
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.address)
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            );
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let response = sender
            .send_request(request.body(Full::new(Bytes::from(payload)))?)
            .await?;
        let status = response.status();
        let text =
            String::from_utf8_lossy(&response.into_body().collect().await?.to_bytes()).into_owned();
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            bail!("{status}: {message}");
        }
        Ok(text)
    }
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
