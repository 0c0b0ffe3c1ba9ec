//! A request for access waiting for approval: its requester asks again with `request_id` (and
//! the same tokens, or fresh ones of the same principals) until people decide. The
//! `request_id` the requester was given is the approval's id and a secret only it holds: the
//! id alone (what approvers, webhooks and logs see) collects nothing. An approved request's
//! token is handed out once, within as long again as approvers had to decide, with the
//! lifetime approved, counted from then and never beyond the presented tokens' own lives.

use std::time::{Duration, SystemTime};

use axum::http::StatusCode;

use super::answer::{Issued, OauthError, PENDING};
use super::asked::Asked;
use super::parties::{Requester, Trail, issue, requester};
use crate::admin::state::ExchangeApi;
use crate::state::Status;

/// The `request_id` a requester is given: the approval's id and its collection secret.
pub(super) fn handle(id: &str, secret: &str) -> String {
    format!("{id}.{secret}")
}

/// Asking again about a request, by its `handle`.
pub(super) async fn poll(
    api: &ExchangeApi,
    asked: &Asked<'_>,
    handle: &str,
) -> Result<Issued, OauthError> {
    let mut trail = Trail::new(api, asked);
    let (id, secret) = handle.split_once('.').unwrap_or((handle, ""));
    let unknown = || {
        OauthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            format!("no request for access {id} with that request_id"),
        )
    };
    let record = match api.approvals.get(id).await {
        Ok(Some(record)) => record,
        Ok(None) => return Err(unknown()),
        Err(e) => return Err(trail.unavailable(e.to_string())),
    };
    let Some(access) = &record.request.access else {
        return Err(unknown());
    };
    let expected = record.request.collect_hash.as_deref().unwrap_or_default();
    if !crate::secret::same(&crate::approvals::queued::hash(secret), expected) {
        trail.record(
            "refused",
            Some("a request_id without its secret".into()),
            None,
            &[],
        );
        return Err(unknown());
    }
    if !asked.database.is_empty() && asked.database != record.request.database {
        return Err(unknown());
    }
    trail.database = record.request.database.clone();
    let requester = requester(api, asked, &record.request.database, &mut trail).await?;
    // Only the parties that asked may collect: the same principals of the same issuers.
    let (_, subject) = &requester.subject;
    let same_subject =
        subject.principal == record.request.subject && subject.issuer == access.issuer_url;
    let same_actor = match (&requester.actor, &access.actor) {
        (None, None) => true,
        (Some((_, who)), Some(actor)) => {
            who.principal == actor.principal && who.issuer == actor.issuer_url
        }
        _ => false,
    };
    if !same_subject || !same_actor {
        trail.record(
            "refused",
            Some("the request was made by someone else".into()),
            None,
            &[],
        );
        return Err(unknown());
    }
    answer(api, &requester, (id, secret), asked.wait, &trail).await
}

/// Waits up to `wait` for request `id` to be decided, and answers with its token, its
/// refusal, or `authorization_pending`.
pub(super) async fn answer(
    api: &ExchangeApi,
    requester: &Requester,
    (id, secret): (&str, &str),
    wait: Duration,
    trail: &Trail<'_>,
) -> Result<Issued, OauthError> {
    let record = match api.approvals.wait_for_decision(id, wait).await {
        Ok(Some(record)) => record,
        Ok(None) => return Err(trail.unavailable(format!("request {id} is gone"))),
        Err(e) => return Err(trail.unavailable(e.to_string())),
    };
    let Some(access) = &record.request.access else {
        return Err(trail.unavailable(format!("request {id} is not a request for access")));
    };
    let approvals = record.votes.iter().filter(|v| v.approve).count();
    match record.status {
        Status::Pending => {
            let left = record
                .request
                .expires
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            Err(OauthError {
                status: StatusCode::BAD_REQUEST,
                error: PENDING,
                description: format!(
                    "request {id} waits for approval ({approvals} of {} so far); ask again with request_id",
                    record.request.approvals_needed
                ),
                pending: Some((handle(id, secret), id.to_owned(), left.as_secs())),
            })
        }
        Status::Approved => {
            // Collected within as long again as approvers had: an approval does not wait for
            // whoever comes to collect it days later.
            let window = record
                .request
                .expires
                .duration_since(record.request.created)
                .unwrap_or_default();
            if record
                .decided
                .is_some_and(|at| at + window < SystemTime::now())
            {
                return Err(OauthError::new(
                    StatusCode::BAD_REQUEST,
                    "expired_token",
                    format!("the token approved by request {id} was not collected in time"),
                ));
            }
            let ttl = Duration::from_secs(access.lifetime_secs).min(requester.left());
            if ttl.is_zero() {
                // Not delivered: the requester may collect it with a fresh token.
                return Err(OauthError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "the presented token has expired; collect the approved token with a fresh one",
                ));
            }
            match api.approvals.deliver(id, secret).await {
                Ok(true) => {}
                Ok(false) => {
                    trail.record("refused", Some("already handed out".into()), None, &[]);
                    return Err(OauthError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        format!("the token approved by request {id} was already handed out"),
                    ));
                }
                Err(e) => return Err(trail.unavailable(e.to_string())),
            }
            issue(
                api,
                requester,
                &record.request.database,
                &record.request.groups,
                ttl,
                access.read_only,
                trail,
            )
        }
        Status::Denied => {
            let refusal = record.votes.iter().find(|v| !v.approve);
            let why = match refusal {
                Some(vote) => format!(
                    "request {id} was denied by {}{}",
                    vote.approver,
                    vote.reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
                None => format!("request {id} was denied"),
            };
            Err(OauthError::new(StatusCode::FORBIDDEN, "access_denied", why))
        }
        Status::Expired => Err(OauthError::new(
            StatusCode::BAD_REQUEST,
            "expired_token",
            format!("request {id} expired before enough approvers decided"),
        )),
        Status::Withdrawn => Err(OauthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            format!("request {id} was withdrawn"),
        )),
    }
}
