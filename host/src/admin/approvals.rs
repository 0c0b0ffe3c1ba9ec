//! `/v1/approvals`: list, show, approve and deny held statements and requests for access. Every call carries a Sluice
//! token (`Authorization: Bearer ...`); the token's subject is the approver. Each request has
//! its own approver groups (the `[approvals]` default route, or an approval plugin's route):
//! a caller sees and decides only the requests routed to a group their token carries, and
//! nobody decides their own request.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::{ApiError, caller as authenticated};
use super::state::{AdminState, ApprovalsApi};
use crate::approvals::{ApprovalError, Approver, Decision};
use crate::state::{ApprovalRecord, StateError};

pub fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/v1/approvals", get(list))
        .route("/v1/approvals/recent", get(recent))
        .route("/v1/approvals/{id}", get(show))
        .route("/v1/approvals/{id}/approve", post(approve))
        .route("/v1/approvals/{id}/deny", post(deny))
}

/// An approval request as the API shows it. Times are Unix seconds.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApprovalView {
    pub id: String,
    pub status: String,
    pub subject: String,
    pub groups: Vec<String>,
    pub database: String,
    pub session_id: u64,
    pub statement: String,
    pub parameters: Vec<Option<String>>,
    /// The statements of the session before it that changed what names mean (`search_path`,
    /// the role): the statement is approved as read after them.
    pub settings: Vec<String>,
    pub fingerprint: String,
    pub plugin: String,
    pub reason: String,
    pub approver_groups: Vec<String>,
    pub approvals_needed: u32,
    /// The approval plugin that routed the request; absent for the `[approvals]` default.
    pub routed_by: Option<String>,
    /// The routing plugin's text for approvers.
    pub note: Option<String>,
    pub created: f64,
    pub expires: f64,
    pub decided: Option<f64>,
    pub votes: Vec<VoteView>,
    /// `statement` (a held statement) or `access` (a request for access: `subject`, `groups`
    /// and `database` are what the token will carry; `statement` is empty).
    pub kind: String,
    /// For a request for access: what it asks for.
    pub access: Option<crate::state::AccessAsk>,
    /// The same request for people to read.
    pub display: DisplayView,
}

/// Agent and plugin text as people may be shown it (`display.rs`: control, bidirectional and
/// invisible characters escaped), and what approving with a scope would cover. The fields
/// above are exact, for tools; a page or terminal shows these.
#[derive(Debug, Serialize, Deserialize)]
pub struct DisplayView {
    pub subject: String,
    pub database: String,
    pub statement: String,
    /// `$1='value'` each (quotes doubled), `$1=NULL` for NULL, a binary value as `'\x...'`
    /// in hex.
    pub parameters: Vec<String>,
    /// `settings`, escaped.
    pub settings: Vec<String>,
    pub plugin: String,
    pub reason: String,
    pub note: Option<String>,
    /// A scoped approval lets the requester run statements reading as this (each `<value>`
    /// any constant) until the scope ends; `None` when no scope can cover the statement.
    pub scope: Option<String>,
    pub votes: Vec<String>,
    /// Who may decide, as the routing plugin named them.
    pub approver_groups: Vec<String>,
    /// For a request for access: what the token will grant, in one line (lifetime, groups,
    /// read-only, the issuer, who acts for the subject), and why the requester asks.
    pub access: Option<String>,
    pub requester_reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct VoteView {
    pub approver: String,
    pub approve: bool,
    pub reason: Option<String>,
    pub at: f64,
    pub scope_seconds: Option<u64>,
}

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl From<ApprovalRecord> for ApprovalView {
    fn from(record: ApprovalRecord) -> ApprovalView {
        use crate::display::{block, line};
        let r = record.request;
        let display = DisplayView {
            approver_groups: r
                .approver_groups
                .iter()
                .map(|g| line(g).into_owned())
                .collect(),
            subject: line(&r.subject).into_owned(),
            database: line(&r.database).into_owned(),
            statement: block(&r.statement).into_owned(),
            parameters: r
                .parameters
                .iter()
                .enumerate()
                .map(|(i, p)| match p {
                    Some(value) => format!("${}='{}'", i + 1, line(&value.replace('\'', "''"))),
                    None => format!("${}=NULL", i + 1),
                })
                .collect(),
            settings: r.settings.iter().map(|s| line(s).into_owned()).collect(),
            plugin: line(&r.plugin).into_owned(),
            reason: line(&r.reason).into_owned(),
            note: r.note.as_deref().map(|n| block(n).into_owned()),
            scope: r
                .access
                .is_none()
                .then(|| crate::approvals::Scope::of(&r.statement, &r.parameters, &r.settings))
                .flatten()
                .map(|s| block(&s.covers).into_owned()),
            access: r.access.as_ref().map(|a| {
                let groups = if r.groups.is_empty() {
                    "no groups".to_owned()
                } else {
                    format!("groups {}", line(&r.groups.join(", ")))
                };
                let actor = a
                    .actor
                    .as_ref()
                    .map(|actor| {
                        format!(
                            ", acted on by {} ({})",
                            line(&actor.principal),
                            line(&actor.issuer)
                        )
                    })
                    .unwrap_or_default();
                format!(
                    "a token for {} on {} for {}, {groups}{}, vouched for by {}{actor}",
                    line(&r.subject),
                    line(&r.database),
                    humantime::format_duration(Duration::from_secs(a.lifetime_secs)),
                    if a.read_only { ", read-only" } else { "" },
                    line(&a.issuer),
                )
            }),
            requester_reason: r.access.as_ref().map(|a| block(&a.reason).into_owned()),
            votes: record
                .votes
                .iter()
                .map(|v| {
                    format!(
                        "{} {}{}",
                        line(&v.approver),
                        if v.approve { "approved" } else { "denied" },
                        v.reason
                            .as_deref()
                            .map(|r| format!(": {}", line(r)))
                            .unwrap_or_default()
                    )
                })
                .collect(),
        };
        ApprovalView {
            display,
            kind: if r.access.is_some() {
                "access"
            } else {
                "statement"
            }
            .to_owned(),
            access: r.access,
            id: r.id,
            status: record.status.as_str().to_owned(),
            subject: r.subject,
            groups: r.groups,
            database: r.database,
            session_id: r.session_id,
            statement: r.statement,
            parameters: r.parameters,
            settings: r.settings,
            fingerprint: format!("{:016x}", r.fingerprint),
            plugin: r.plugin,
            reason: r.reason,
            approver_groups: r.approver_groups,
            approvals_needed: r.approvals_needed,
            routed_by: r.routed_by,
            note: r.note,
            created: seconds(r.created),
            expires: seconds(r.expires),
            decided: record.decided.map(seconds),
            votes: record
                .votes
                .into_iter()
                .map(|v| VoteView {
                    approver: v.approver,
                    approve: v.approve,
                    reason: v.reason,
                    at: seconds(v.at),
                    scope_seconds: v.scope.map(|d| d.as_secs()),
                })
                .collect(),
        }
    }
}

/// Body of approve and deny (all optional).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    pub reason: Option<String>,
    /// Approve only: also let the requester run statements of this fingerprint for this many
    /// seconds.
    pub scope_seconds: Option<u64>,
}

impl From<ApprovalError> for ApiError {
    fn from(e: ApprovalError) -> ApiError {
        let status = match &e {
            ApprovalError::SelfApproval | ApprovalError::NotAnApprover { .. } => {
                StatusCode::FORBIDDEN
            }
            ApprovalError::State(StateError::UnknownRequest(_)) => StatusCode::NOT_FOUND,
            ApprovalError::State(StateError::Closed { .. } | StateError::AlreadyVoted { .. }) => {
                StatusCode::CONFLICT
            }
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

/// The caller, from a valid token. What they may see and decide depends on each request's
/// approver groups (set by its route), so group membership is checked per request.
fn caller(api: &ApprovalsApi, headers: &HeaderMap, writes: bool) -> Result<Approver, ApiError> {
    let who = authenticated(
        &api.tokens,
        &api.revocations,
        api.sign_in.as_deref(),
        headers,
        writes,
    )?;
    Ok(Approver {
        subject: who.subject,
        groups: who.groups,
    })
}

/// Whether `who` is in one of the request's approver groups.
fn may_decide(who: &Approver, record: &ApprovalRecord) -> bool {
    who.groups
        .iter()
        .any(|g| record.request.approver_groups.contains(g))
}

fn api(state: &AdminState) -> Result<&ApprovalsApi, ApiError> {
    state.approvals.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "approvals are not served here".into(),
        )
    })
}

async fn list(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<ApprovalView>>, ApiError> {
    let api = api(&state)?;
    let who = caller(api, &headers, false)?;
    let pending = api.approvals.pending().await?;
    let mine = pending.into_iter().filter(|r| may_decide(&who, r));
    Ok(Json(mine.map(ApprovalView::from).collect()))
}

/// `GET /v1/approvals/recent`: what was decided in the last day, among the requests the
/// caller may decide or made.
async fn recent(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<ApprovalView>>, ApiError> {
    let api = api(&state)?;
    let who = caller(api, &headers, false)?;
    let recent = api
        .approvals
        .recent(Duration::from_secs(24 * 3600), 200)
        .await?;
    let visible = recent
        .into_iter()
        .filter(|r| may_decide(&who, r) || r.request.subject == who.subject);
    Ok(Json(visible.map(ApprovalView::from).collect()))
}

async fn show(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ApprovalView>, ApiError> {
    let api = api(&state)?;
    let who = caller(api, &headers, false)?;
    match api.approvals.get(&id).await? {
        // Requesters may follow their own requests.
        Some(record) if may_decide(&who, &record) || record.request.subject == who.subject => {
            Ok(Json(record.into()))
        }
        Some(record) => Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "{} is not in an approver group of request {id} ({})",
                who.subject,
                record.request.approver_groups.join(", ")
            ),
        )),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no approval request {id}"),
        )),
    }
}

async fn approve(
    state: State<Arc<AdminState>>,
    id: Path<String>,
    headers: HeaderMap,
    body: Option<Json<DecisionBody>>,
) -> Result<Json<ApprovalView>, ApiError> {
    decide(state, id, headers, body, true).await
}

async fn deny(
    state: State<Arc<AdminState>>,
    id: Path<String>,
    headers: HeaderMap,
    body: Option<Json<DecisionBody>>,
) -> Result<Json<ApprovalView>, ApiError> {
    decide(state, id, headers, body, false).await
}

async fn decide(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Option<Json<DecisionBody>>,
    approve: bool,
) -> Result<Json<ApprovalView>, ApiError> {
    let api = api(&state)?;
    let who = caller(api, &headers, true)?;
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let decision = Decision {
        approve,
        reason: body.reason,
        scope: body.scope_seconds.map(Duration::from_secs),
    };
    let record = api.approvals.decide(&id, &who, decision).await?;
    Ok(Json(record.into()))
}
