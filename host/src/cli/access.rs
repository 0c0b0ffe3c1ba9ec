//! `sluice access request`: a workload asks for a database with the identity its platform gave
//! it. The workload token comes from `--subject-token FILE` (`-`: standard input), or where the
//! platform puts it: GitHub Actions' OIDC endpoint (`ACTIONS_ID_TOKEN_REQUEST_URL` and
//! `ACTIONS_ID_TOKEN_REQUEST_TOKEN`, with `permissions: id-token: write`), or a Kubernetes
//! projected service-account token file (`SLUICE_SUBJECT_TOKEN_FILE`, default
//! `/var/run/secrets/tokens/sluice`). It is exchanged at `POST /v1/token` for a gateway token,
//! printed alone, or with `--psql` as a ready `PGPASSWORD=... psql "..."` line.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use sluice::admin::token_exchange::{GRANT_TYPE, Issued, JWT};
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
    let form: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", GRANT_TYPE)
        .append_pair("subject_token_type", JWT)
        .append_pair("subject_token", subject_token.trim())
        .append_pair("audience", &args.database)
        .append_pair("reason", &args.reason)
        .append_pair("expires_in", &args.ttl.as_secs().max(1).to_string())
        .finish();
    let answer = admin_client::request(
        &address,
        "POST",
        "/v1/token",
        None,
        Some(("application/x-www-form-urlencoded", form.into_bytes())),
    )
    .await
    .context("the gateway did not issue a token")?;
    let issued: Issued = serde_json::from_str(&answer)?;
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

/// The workload token, from where it was named or where the platform puts it.
async fn subject_token(named: Option<&str>, audience: &str) -> anyhow::Result<String> {
    match named {
        Some("-") => {
            let mut token = String::new();
            std::io::stdin().read_to_string(&mut token)?;
            return Ok(token);
        }
        Some(file) => {
            return std::fs::read_to_string(file).with_context(|| format!("reading {file}"));
        }
        None => {}
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
