//! `sluice access request`: a workload asks for a database with the identity its platform gave
//! it. The workload token comes from `--subject-token FILE` (`-`: standard input), or where the
//! platform puts it: GitHub Actions' OIDC endpoint (`ACTIONS_ID_TOKEN_REQUEST_URL` and
//! `ACTIONS_ID_TOKEN_REQUEST_TOKEN`, with `permissions: id-token: write`), or a Kubernetes
//! projected service-account token file (`SLUICE_SUBJECT_TOKEN_FILE`, default
//! `/var/run/secrets/tokens/sluice`). It is exchanged at `POST /v1/token` for a gateway token,
//! printed alone, or with `--psql` as a ready `PGPASSWORD=... psql "..."` line. When an access
//! plugin asks for approval the command says so (the request id, for approvers) and waits for
//! the decision, asking again every `MAX_WAIT` with the same tokens, up to `--wait`.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use sluice::admin::token_exchange::{GRANT_TYPE, Issued, JWT, MAX_WAIT, PENDING};
use sluice::config::Config;

use super::admin_client;

/// Where a Kubernetes pod's projected token is read from when nothing else names one.
const PROJECTED_TOKEN: &str = "/var/run/secrets/tokens/sluice";

#[derive(Subcommand)]
pub enum AccessCommand {
    /// Exchange this workload's identity for a short-lived token for one database.
    Request(RequestArgs),
}

#[derive(Args)]
pub struct RequestArgs {
    /// Admin API address of the gateway, e.g. http://gateway:6434.
    #[arg(long, conflicts_with = "config")]
    server: Option<String>,
    /// Read the gateway's addresses from its config instead.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The database to ask for.
    #[arg(long)]
    database: String,
    /// How long the token should live (the gateway may give less).
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Why access is needed (recorded in the audit log).
    #[arg(long)]
    reason: String,
    /// The workload token: a file, or `-` for standard input. Absent: GitHub Actions' OIDC
    /// endpoint or the Kubernetes projected token file.
    #[arg(long)]
    subject_token: Option<String>,
    /// A token of whoever acts for the subject (an agent acting for a person): a file, or `-`
    /// for standard input. The issued token names both (`act`).
    #[arg(long)]
    actor_token: Option<String>,
    /// How long to wait for approvers when the request needs approval (0: do not wait; print
    /// the request id and stop).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// Collect the answer to an earlier request that waited for approval (the `request_id`
    /// printed when this command gave up waiting), instead of asking anew, with the same
    /// identity.
    #[arg(long)]
    request_id: Option<String>,
    /// The audience asked of GitHub Actions' OIDC endpoint (the issuer's `audience` in the
    /// gateway's config).
    #[arg(long, default_value = "sluice")]
    audience: String,
    /// Print a `PGPASSWORD=... psql "..."` line instead of the token alone.
    #[arg(long)]
    psql: bool,
    /// The gateway's Postgres address for `--psql` (default: `[server] listen` of `--config`,
    /// or the admin API's host on port 6433).
    #[arg(long)]
    gateway: Option<String>,
}

pub async fn run(command: AccessCommand) -> anyhow::Result<()> {
    let AccessCommand::Request(args) = command;
    let address = admin_client::address(args.server.as_deref(), args.config.as_deref())?;
    let subject_token = subject_token(args.subject_token.as_deref(), &args.audience).await?;
    let actor_token = args.actor_token.as_deref().map(read_token).transpose()?;
    let issued = exchange(&address, &args, &subject_token, actor_token.as_deref())
        .await
        .context("the gateway did not issue a token")?;
    if !args.psql {
        println!("{}", issued.access_token);
        return Ok(());
    }
    let user = subject_of(&issued.access_token)?;
    let gateway = match (&args.gateway, &args.config) {
        (Some(gateway), _) => gateway.clone(),
        (None, Some(file)) => Config::load(file)?.server.listen.to_string(),
        (None, None) => {
            let host = address
                .rsplit_once(':')
                .map_or(address.as_str(), |(h, _)| h);
            format!("{host}:6433")
        }
    };
    let (host, port) = gateway
        .rsplit_once(':')
        .with_context(|| format!("--gateway {gateway}: expected HOST:PORT"))?;
    println!(
        "PGPASSWORD={} psql \"host={host} port={port} user={} dbname={} sslmode=require\"",
        issued.access_token,
        conninfo_value(&user),
        conninfo_value(&args.database)
    );
    eprintln!(
        "(expires in {})",
        humantime::format_duration(Duration::from_secs(issued.expires_in))
    );
    Ok(())
}

/// Asks for the token, and while an approval is pending, asks again until `--wait` is over.
async fn exchange(
    address: &str,
    args: &RequestArgs,
    subject_token: &str,
    actor_token: Option<&str>,
) -> anyhow::Result<Issued> {
    let deadline = tokio::time::Instant::now() + args.wait;
    let mut request_id = args.request_id.clone();
    loop {
        // The first answer comes at once, so that the request's id is shown while waiting.
        let wait = match &request_id {
            None => Duration::ZERO,
            Some(_) => deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .min(MAX_WAIT),
        };
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", GRANT_TYPE)
            .append_pair("subject_token_type", JWT)
            .append_pair("subject_token", subject_token.trim())
            .append_pair("audience", &args.database)
            .append_pair("reason", &args.reason)
            .append_pair("expires_in", &args.ttl.as_secs().max(1).to_string())
            .append_pair("wait", &wait.as_secs().to_string());
        if let Some(actor) = actor_token {
            form.append_pair("actor_token_type", JWT)
                .append_pair("actor_token", actor.trim());
        }
        if let Some(id) = &request_id {
            form.append_pair("request_id", id);
        }
        let body = (
            "application/x-www-form-urlencoded",
            form.finish().into_bytes(),
        );
        let (status, text) =
            admin_client::answer(address, "POST", "/v1/token", None, Some(body)).await?;
        if status.is_success() {
            return Ok(serde_json::from_str(&text)?);
        }
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let described = || {
            format!(
                "{status}: {}: {}",
                answer["error"].as_str().unwrap_or_default(),
                answer["error_description"].as_str().unwrap_or(&text)
            )
        };
        if answer["error"] != PENDING {
            bail!("{}", described());
        }
        let handle = answer["request_id"]
            .as_str()
            .context("a pending answer without its request_id")?;
        let id = answer["approval_id"].as_str().unwrap_or_default();
        if request_id.is_none() {
            eprintln!(
                "waiting for approval: request {id} (approvers: sluice approvals approve {id})"
            );
        }
        request_id = Some(handle.to_owned());
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{}; collect it later, with the same identity, with --request-id {handle}",
                described()
            );
        }
    }
}

fn read_token(named: &str) -> anyhow::Result<String> {
    if named == "-" {
        let mut token = String::new();
        std::io::stdin().read_to_string(&mut token)?;
        return Ok(token);
    }
    std::fs::read_to_string(named).with_context(|| format!("reading {named}"))
}

/// The workload token, from where it was named or where the platform puts it.
async fn subject_token(named: Option<&str>, audience: &str) -> anyhow::Result<String> {
    if let Some(named) = named {
        return read_token(named);
    }
    if let (Ok(url), Ok(bearer)) = (
        std::env::var("ACTIONS_ID_TOKEN_REQUEST_URL"),
        std::env::var("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
    ) {
        let mut url = url::Url::parse(&url).context("ACTIONS_ID_TOKEN_REQUEST_URL")?;
        url.query_pairs_mut().append_pair("audience", audience);
        let tls = sluice::web::client_tls(None)?;
        let body = sluice::web::get(
            &url,
            Some(&bearer),
            &tls,
            64 * 1024,
            Duration::from_secs(10),
        )
        .await
        .context("asking GitHub Actions for an OIDC token")?;
        let answer: serde_json::Value = serde_json::from_slice(&body)?;
        return answer["value"]
            .as_str()
            .map(str::to_owned)
            .context("GitHub Actions' answer has no token (value)");
    }
    let file =
        std::env::var("SLUICE_SUBJECT_TOKEN_FILE").unwrap_or_else(|_| PROJECTED_TOKEN.into());
    match std::fs::read_to_string(&file) {
        Ok(token) => Ok(token),
        Err(_) => bail!(
            "no workload token: give --subject-token FILE, run in GitHub Actions with \
             `permissions: id-token: write`, or mount a projected token at {file}"
        ),
    }
}

/// The `sub` of a gateway token: the user name its sessions log in with.
fn subject_of(token: &str) -> anyhow::Result<String> {
    use base64::Engine as _;
    let payload = token
        .split('.')
        .nth(1)
        .context("the issued token is not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes)?;
    claims["sub"]
        .as_str()
        .map(str::to_owned)
        .context("the issued token has no sub")
}

/// A libpq connection-string value, quoted when it needs to be.
fn conninfo_value(value: &str) -> String {
    if !value.is_empty() && !value.contains([' ', '\'', '\\', '"']) {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}
