//! Webhook notifications: when a statement is held, every configured URL gets a JSON POST in
//! the shape Slack's incoming webhooks accept (`text`), with the request itself beside it for
//! other receivers. Delivery is best effort and never delays the held statement: a webhook
//! that is down is logged, and approvers still find the request in the queue.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::state::ApprovalRequest;

pub struct Notifier {
    hooks: Vec<url::Url>,
    timeout: Duration,
    tls: TlsConnector,
}

impl Notifier {
    /// `hooks` are `http://` or `https://` URLs (checked by the config); HTTPS is verified
    /// against the Mozilla root set.
    pub fn new(hooks: Vec<url::Url>, timeout: Duration) -> Notifier {
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .expect("ring supports the default protocol versions");
        Notifier {
            hooks,
            timeout,
            tls: TlsConnector::from(Arc::new(config)),
        }
    }

    /// Posts `request` to every hook in the background.
    pub fn held(&self, request: &ApprovalRequest) {
        if self.hooks.is_empty() {
            return;
        }
        let body = Bytes::from(message(request).to_string());
        for hook in &self.hooks {
            let (hook, body, tls, timeout) =
                (hook.clone(), body.clone(), self.tls.clone(), self.timeout);
            let id = request.id.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(timeout, post(&hook, body, tls)).await {
                    Ok(Ok(status)) if (200..300).contains(&status) => {
                        tracing::debug!(approval = %id, hook = %redacted(&hook), status, "webhook notified");
                    }
                    Ok(Ok(status)) => {
                        tracing::warn!(approval = %id, hook = %redacted(&hook), status, "webhook refused the notification");
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(approval = %id, hook = %redacted(&hook), error = %e, "webhook notification failed");
                    }
                    Err(_) => {
                        tracing::warn!(approval = %id, hook = %redacted(&hook), ?timeout, "webhook notification timed out");
                    }
                }
            });
        }
    }
}

/// The hook without its path and query, which often carry a secret (Slack's do).
fn redacted(hook: &url::Url) -> String {
    format!(
        "{}://{}",
        hook.scheme(),
        hook.host_str().unwrap_or_default()
    )
}

fn message(r: &ApprovalRequest) -> serde_json::Value {
    let expires = r
        .expires
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // A routing plugin's text replaces the headline; the statement and commands stay. Every
    // piece of agent or plugin text is escaped for the chat markup (`display::slack`): the
    // text cannot mention a channel, hide a link or leave its code block.
    use crate::display::slack;
    if let Some(access) = &r.access {
        return access_message(r, access);
    }
    let headline = match &r.note {
        Some(note) => slack(note, true),
        None => format!(
            "sluice: approval {id} required for {subject} on {database} ({plugin}: {reason})",
            id = r.id,
            subject = slack(&r.subject, false),
            database = slack(&r.database, false),
            plugin = slack(&r.plugin, false),
            reason = slack(&r.reason, false),
        ),
    };
    // The values an approval is for, as the approvers' page shows them.
    let values: Vec<String> = r
        .parameters
        .iter()
        .enumerate()
        .map(|(i, p)| match p {
            Some(value) => format!("${}='{}'", i + 1, slack(&value.replace('\'', "''"), false)),
            None => format!("${}=NULL", i + 1),
        })
        .collect();
    let values = if values.is_empty() {
        String::new()
    } else {
        format!("\nParameters: {}", values.join(" "))
    };
    // What names in it mean: the session's changes of search_path and the role before it.
    let settings = if r.settings.is_empty() {
        String::new()
    } else {
        format!(
            "\nAfter these statements of the session: ```{}```",
            slack(&r.settings.join("\n"), true)
        )
    };
    let text = format!(
        "{headline}\n```{statement}```{values}{settings}\nApprove: sluice approvals approve {id}    Deny: sluice approvals deny {id}",
        id = r.id,
        statement = slack(&r.statement, true),
    );
    serde_json::json!({
        "text": text,
        "approval": {
            "id": r.id,
            "subject": r.subject,
            "groups": r.groups,
            "database": r.database,
            "statement": r.statement,
            "parameters": r.parameters,
            "settings": r.settings,
            "fingerprint": format!("{:016x}", r.fingerprint),
            "plugin": r.plugin,
            "reason": r.reason,
            "approver_groups": r.approver_groups,
            "approvals_needed": r.approvals_needed,
            "routed_by": r.routed_by,
            "note": r.note,
            "expires": expires,
        }
    })
}

/// A request for access: who asks for what, why, and who vouches for them.
fn access_message(r: &ApprovalRequest, access: &crate::state::AccessAsk) -> serde_json::Value {
    use crate::display::slack;
    let actor = access
        .actor
        .as_ref()
        .map(|a| format!(" (acted on by {})", slack(&a.principal, false)))
        .unwrap_or_default();
    let text = format!(
        "sluice: approval {id}: {subject}{actor}, vouched for by {issuer}, asks for {database} for {lifetime}{read_only} ({plugin}: {reason})\nBecause: ```{because}```\nApprove: sluice approvals approve {id}    Deny: sluice approvals deny {id}",
        id = r.id,
        subject = slack(&r.subject, false),
        issuer = slack(&access.issuer, false),
        database = slack(&r.database, false),
        lifetime = humantime::format_duration(Duration::from_secs(access.lifetime_secs)),
        read_only = if access.read_only { ", read-only" } else { "" },
        plugin = slack(&r.plugin, false),
        reason = slack(&r.reason, false),
        because = slack(&access.reason, true),
    );
    serde_json::json!({
        "text": text,
        "approval": {
            "id": r.id,
            "kind": "access",
            "subject": r.subject,
            "groups": r.groups,
            "database": r.database,
            "access": access,
            "plugin": r.plugin,
            "reason": r.reason,
            "approver_groups": r.approver_groups,
            "approvals_needed": r.approvals_needed,
            "routed_by": r.routed_by,
            "expires": r.expires.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        }
    })
}

/// Delivery failures are only logged, so their type only needs to print.
type PostError = Box<dyn std::error::Error + Send + Sync>;

async fn post(hook: &url::Url, body: Bytes, tls: TlsConnector) -> Result<u16, PostError> {
    let host = hook.host_str().ok_or("the URL has no host")?;
    let port = hook.port_or_known_default().ok_or("the URL has no port")?;
    let tcp = TcpStream::connect((host, port)).await?;
    let path = match hook.query() {
        Some(query) => format!("{}?{query}", hook.path()),
        None => hook.path().to_owned(),
    };
    let request = hyper::Request::post(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))?;
    let status = if hook.scheme() == "https" {
        let name = ServerName::try_from(host.to_owned())?;
        let stream = tls.connect(name, tcp).await?;
        send(hyper_util::rt::TokioIo::new(stream), request).await?
    } else {
        send(hyper_util::rt::TokioIo::new(tcp), request).await?
    };
    Ok(status)
}

async fn send<S>(io: S, request: hyper::Request<Full<Bytes>>) -> Result<u16, PostError>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn request(note: Option<&str>) -> ApprovalRequest {
        ApprovalRequest {
            id: "apr-1".into(),
            session_id: 1,
            subject: "agent".into(),
            groups: vec![],
            database: "app".into(),
            statement: "UPDATE billing.invoices SET amount = 0".into(),
            parameters: vec![],
            settings: vec![],
            fingerprint: 1,
            plugin: "approve-writes".into(),
            reason: "writes".into(),
            approver_groups: vec!["dba".into()],
            approvals_needed: 2,
            routed_by: note.map(|_| "route-by-table".into()),
            note: note.map(str::to_owned),
            created: SystemTime::now(),
            expires: SystemTime::now(),
            access: None,
            collect_hash: None,
        }
    }

    #[test]
    fn a_routing_plugins_note_heads_the_notification_and_the_statement_stays() {
        let routed = message(&request(Some("billing write: 2 of dba")));
        let text = routed["text"].as_str().unwrap();
        assert!(text.starts_with("billing write: 2 of dba\n"), "{text}");
        assert!(text.contains("UPDATE billing.invoices") && text.contains("approve apr-1"));
        assert_eq!(routed["approval"]["routed_by"], "route-by-table");

        let default = message(&request(None));
        let text = default["text"].as_str().unwrap();
        assert!(
            text.starts_with("sluice: approval apr-1 required for agent"),
            "{text}"
        );
        assert!(default["approval"]["routed_by"].is_null());
    }

    #[test]
    fn agent_text_cannot_ping_a_channel_hide_a_link_or_leave_its_code_block() {
        let mut hostile = request(None);
        hostile.statement =
            "SELECT 1 ``` <!channel> <https://evil.example|approve here>\u{202E}".into();
        hostile.reason = "writes\n*urgent*".into();
        hostile.parameters = vec![Some("<!here>".into()), None];
        hostile.settings = vec!["SET search_path = `x` ``` <!here>".into()];
        let text = message(&hostile)["text"].as_str().unwrap().to_owned();
        assert!(
            text.contains("After these statements of the session: ```SET search_path = "),
            "what names mean is shown: {text}"
        );
        assert!(
            !text.contains("<!channel>")
                && !text.contains("<!here>")
                && !text.contains("<https://"),
            "{text}"
        );
        assert!(text.contains("&lt;!channel&gt;"), "{text}");
        assert_eq!(
            text.matches("```").count(),
            4,
            "only the gateway's fences: {text}"
        );
        assert!(
            text.contains("\\u{202E}") && text.contains("writes\\u{000A}*urgent*"),
            "{text}"
        );
        assert!(
            text.contains("Parameters: $1='&lt;!here&gt;' $2=NULL"),
            "the values approvers decide on: {text}"
        );
        // The exact request stays beside it for machines.
        assert_eq!(
            message(&hostile)["approval"]["statement"],
            hostile.statement
        );
    }
}
