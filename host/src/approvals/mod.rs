//! The approval queue: a held statement becomes a request, approvers vote on it, and the session
//! waiting for it is woken the moment it is decided. Nobody approves their own request; quorum
//! counts distinct approvers; an approval covers exactly the held statement, once, unless the
//! approver grants a scope (that statement shape, for that subject, for a while: `scope.rs`).
//!
//! Requests for access (a token the exchange issues once approved) join the same queue, with
//! the same routing, quorum and no-self-approval rules; nobody holds a connection open on them:
//! the requester polls (`queued.rs`) and the token is handed out once.

pub mod hold;
mod notify;
pub mod outcome;
pub mod queued;
mod routing;
mod scope;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use tokio::sync::watch;

use crate::audit::{Audit, Event, VoteRecord};
use crate::state::{
    AccessAsk, ApprovalRecord, ApprovalRequest, ApprovalStore, StateError, Status, Vote,
};

/// The default route, used when no approval plugin routes a request.
#[derive(Debug, Clone)]
pub struct Route {
    pub approver_groups: Vec<String>,
    pub approvals_needed: u32,
    pub timeout: Duration,
    /// Requests one subject may have waiting at once (0: no limit).
    pub max_pending_per_subject: usize,
}

pub use routing::{PluginRoute, Routing, RoutingFailure, route};

pub use scope::Scope;

/// A fresh request id, as the client's notice and the approvers see it.
pub fn new_id() -> String {
    format!("apr-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// What the session knows when a policy asks for approval.
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// From [`new_id`].
    pub id: String,
    pub session_id: u64,
    pub subject: String,
    pub groups: Vec<String>,
    pub database: String,
    pub statement: String,
    pub parameters: Vec<Option<String>>,
    /// The statements of the session before it that changed what names mean (`search_path`,
    /// the role), as approvers are shown them.
    pub settings: Vec<String>,
    /// The key of the statement's [`Scope`]: what a scoped grant of this request covers.
    pub fingerprint: u64,
    pub plugin: String,
    pub reason: String,
    /// Set for a request for access; see [`ApprovalRequest::access`].
    pub access: Option<AccessAsk>,
}

/// Someone deciding, as their token says.
#[derive(Debug, Clone)]
pub struct Approver {
    pub subject: String,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Decision {
    pub approve: bool,
    pub reason: Option<String>,
    /// With an approval: also let the requester run statements of this scope for this long.
    pub scope: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("nobody may decide their own approval request")]
    SelfApproval,
    #[error("{subject} is not in any approver group of this request ({groups})")]
    NotAnApprover { subject: String, groups: String },
    #[error("{subject} already has {max} statements waiting for approval")]
    TooManyPending { subject: String, max: usize },
    #[error("the state store is unavailable: {0}")]
    Unavailable(String),
}

pub use notify::Notifier;

/// Who waits for a request's decision: the session holding the statement, or (a request for
/// access) its requester, who collects the token with a secret.
enum Waiter {
    Session(watch::Receiver<Status>),
    Requester(String),
}

/// A request just recorded: waiting for people, or already decided by an approval plugin.
pub enum Opened {
    Waiting(Pending),
    Decided(Box<ApprovalRecord>),
    /// A request for access, waiting for people; its requester polls for the decision and
    /// collects the token with `secret` (given to nobody else).
    Queued {
        id: String,
        secret: String,
    },
}

pub struct Approvals {
    store: Arc<dyn ApprovalStore>,
    route: Route,
    notifier: Notifier,
    audit: Arc<Audit>,
    /// Sessions of this gateway waiting on a request, woken when it is decided here.
    waiting: DashMap<String, watch::Sender<Status>>,
    /// Bumped at every vote and closing here, so that requesters polling for a decision look
    /// again at once.
    changed: watch::Sender<u64>,
}

/// A request the calling session is waiting on. Dropped undecided (the session ended for
/// another reason: token expiry, shutdown), it is withdrawn in the background.
pub struct Pending {
    pub id: String,
    pub timeout: Duration,
    expires: SystemTime,
    decided: watch::Receiver<Status>,
    approvals: Arc<Approvals>,
    closed: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let (approvals, id) = (self.approvals.clone(), self.id.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = approvals.close(&id, Status::Withdrawn).await;
            });
        }
    }
}

impl Approvals {
    pub fn new(
        store: Arc<dyn ApprovalStore>,
        route: Route,
        notifier: Notifier,
        audit: Arc<Audit>,
    ) -> Arc<Approvals> {
        Arc::new(Approvals {
            store,
            route,
            notifier,
            audit,
            waiting: DashMap::new(),
            changed: watch::Sender::new(0),
        })
    }

    /// Runs a store call off the async threads (SQLite may wait on disk or on a lock).
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn ApprovalStore) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, ApprovalError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || call(store.as_ref()))
            .await
            .map_err(|e| ApprovalError::Unavailable(e.to_string()))?
            .map_err(ApprovalError::from)
    }

    /// Whether an earlier scoped approval lets `subject` run `fingerprint` on `database` now.
    pub async fn granted(
        &self,
        subject: &str,
        database: &str,
        fingerprint: u64,
    ) -> Result<Option<crate::state::ScopedGrant>, ApprovalError> {
        let (subject, database) = (subject.to_owned(), database.to_owned());
        self.blocking(move |store| {
            store.grant_for(&subject, &database, fingerprint, SystemTime::now())
        })
        .await
    }

    /// Records the request as `routing` says. A request routed to people returns a handle to
    /// wait on; one an approval plugin decided is recorded with the plugin's vote (as
    /// `plugin:<name>`) and returned decided.
    pub async fn open(
        self: &Arc<Self>,
        new: NewRequest,
        routing: Routing,
    ) -> Result<Opened, ApprovalError> {
        let created = SystemTime::now();
        let default = &self.route;
        let (groups, needed, timeout, routed_by, note) = match &routing {
            Routing::Default => (
                default.approver_groups.clone(),
                default.approvals_needed.max(1),
                default.timeout,
                None,
                None,
            ),
            Routing::Ask(r) => (
                r.approver_groups.clone(),
                r.approvals_needed.max(1),
                r.timeout.unwrap_or(default.timeout),
                Some(r.by.clone()),
                r.note.clone(),
            ),
            // Decided as it is recorded: it expires a moment after the plugin's vote.
            Routing::Decided { by, .. } => (
                Vec::new(),
                1,
                Duration::from_millis(1),
                Some(by.clone()),
                None,
            ),
        };
        let mut request = ApprovalRequest {
            id: new.id,
            session_id: new.session_id,
            subject: new.subject,
            groups: new.groups,
            database: new.database,
            statement: new.statement,
            parameters: new.parameters,
            settings: new.settings,
            fingerprint: new.fingerprint,
            plugin: new.plugin,
            reason: new.reason,
            approver_groups: groups,
            approvals_needed: needed,
            routed_by,
            note,
            created,
            expires: created + timeout,
            access: new.access,
            collect_hash: None,
        };
        let secret = request.access.is_some().then(|| {
            let secret = crate::secret::random();
            request.collect_hash = Some(queued::hash(&secret));
            secret
        });
        let id = request.id.clone();
        if let Routing::Decided {
            by,
            approve,
            reason,
        } = routing
        {
            let vote = Vote {
                approver: format!("plugin:{by}"),
                approve,
                reason: Some(reason),
                at: created,
                scope: None,
            };
            let record = self
                .blocking(move |store| {
                    store.insert_request(&request)?;
                    store.vote(&request.id, &vote)
                })
                .await?;
            tracing::info!(approval = %id, plugin = %by, approve, "approval request decided by its approval plugin");
            self.audit_requested(&record.request);
            self.audit_decided(&record);
            return Ok(Opened::Decided(Box::new(record)));
        }
        // A held statement's session is registered before the request is visible, so that a
        // vote cast at once still wakes it.
        let waiter = match secret {
            Some(secret) => Waiter::Requester(secret),
            None => {
                let (tx, rx) = watch::channel(Status::Pending);
                self.waiting.insert(id.clone(), tx);
                Waiter::Session(rx)
            }
        };
        let max = self.route.max_pending_per_subject;
        let stored = request.clone();
        let inserted = self
            .blocking(move |store| store.insert_within_limit(&stored, max))
            .await;
        if inserted.is_err() {
            self.waiting.remove(&id);
        }
        if let Err(ApprovalError::State(StateError::TooManyPending { subject, max })) = inserted {
            tracing::warn!(%subject, max, "approval request refused: too many pending for this subject");
            return Err(ApprovalError::TooManyPending { subject, max });
        }
        inserted?;
        self.audit_requested(&request);
        self.notifier.held(&request);
        let rx = match waiter {
            Waiter::Requester(secret) => {
                tracing::info!(approval = %id, plugin = %request.plugin, routed_by = ?request.routed_by, "request for access waiting for approval");
                return Ok(Opened::Queued { id, secret });
            }
            Waiter::Session(rx) => rx,
        };
        tracing::info!(approval = %id, plugin = %request.plugin, routed_by = ?request.routed_by, "statement held for approval");
        Ok(Opened::Waiting(Pending {
            id,
            timeout,
            expires: request.expires,
            decided: rx,
            approvals: self.clone(),
            closed: false,
        }))
    }

    /// One approver's vote. Refused for the requester themself and for anyone outside the
    /// request's approver groups.
    pub async fn decide(
        &self,
        id: &str,
        approver: &Approver,
        decision: Decision,
    ) -> Result<ApprovalRecord, ApprovalError> {
        let key = id.to_owned();
        let record = self
            .blocking(move |store| {
                store
                    .request(&key)?
                    .ok_or(StateError::UnknownRequest(key.clone()))
            })
            .await?;
        let actor = record
            .request
            .access
            .as_ref()
            .and_then(|a| a.actor.as_ref());
        if record.request.subject == approver.subject
            || actor.is_some_and(|a| a.principal == approver.subject)
        {
            return Err(ApprovalError::SelfApproval);
        }
        if !approver
            .groups
            .iter()
            .any(|g| record.request.approver_groups.contains(g))
        {
            return Err(ApprovalError::NotAnApprover {
                subject: approver.subject.clone(),
                groups: record.request.approver_groups.join(", "),
            });
        }
        let at = SystemTime::now();
        let vote = Vote {
            approver: approver.subject.clone(),
            approve: decision.approve,
            reason: decision.reason,
            at,
            // A scope covers statements; a request for access has none.
            scope: decision
                .scope
                .map(|scope| crate::identity::within_latest(at, scope))
                .filter(|_| decision.approve && record.request.access.is_none()),
        };
        let key = id.to_owned();
        let record = self.blocking(move |store| store.vote(&key, &vote)).await?;
        tracing::info!(approval = %id, approver = %approver.subject, approve = decision.approve, status = record.status.as_str(), "approval vote");
        self.wake(&record);
        if record.request.access.is_some() && record.status != Status::Pending {
            self.audit_decided(&record);
        }
        self.changed.send_modify(|n| *n += 1);
        Ok(record)
    }

    /// Wakes the session waiting on a request this decision settled, and records the decision
    /// (once: only while someone waits on it).
    fn wake(&self, record: &ApprovalRecord) {
        if record.status != Status::Pending
            && let Some((_, tx)) = self.waiting.remove(&record.request.id)
        {
            self.audit_decided(record);
            let _ = tx.send(record.status);
        }
    }

    fn audit_requested(&self, r: &ApprovalRequest) {
        self.audit.record(Event::ApprovalRequested {
            id: r.id.clone(),
            session: r.session_id,
            subject: r.subject.clone(),
            database: r.database.clone(),
            statement: self.audit.text(&r.statement),
            plugin: r.plugin.clone(),
            reason: r.reason.clone(),
            approver_groups: r.approver_groups.clone(),
            approvals_needed: r.approvals_needed,
            routed_by: r.routed_by.clone(),
            access: r.access.clone(),
        });
    }

    fn audit_decided(&self, record: &ApprovalRecord) {
        self.audit.record(Event::ApprovalDecided {
            id: record.request.id.clone(),
            status: record.status.as_str().to_owned(),
            votes: record
                .votes
                .iter()
                .map(|v| VoteRecord {
                    approver: v.approver.clone(),
                    approve: v.approve,
                    reason: v.reason.clone(),
                    scope_seconds: v.scope.map(|d| d.as_secs()),
                })
                .collect(),
        });
    }

    pub async fn get(&self, id: &str) -> Result<Option<ApprovalRecord>, ApprovalError> {
        let id = id.to_owned();
        self.blocking(move |store| store.request(&id)).await
    }

    pub async fn pending(&self) -> Result<Vec<ApprovalRecord>, ApprovalError> {
        self.expire_stale().await?;
        self.blocking(|store| store.pending()).await
    }

    /// Ends requests past their expiry that nobody is waiting on to end them; a request for
    /// access ended so is recorded (a held statement's session records its own).
    async fn expire_stale(&self) -> Result<(), ApprovalError> {
        let expired = self
            .blocking(|store| store.expire_stale(SystemTime::now()))
            .await?;
        for record in expired {
            if record.request.access.is_some() {
                self.audit_decided(&record);
            } else {
                self.wake(&record);
            }
        }
        Ok(())
    }

    /// Requests decided or ended within `within`, newest first (at most `limit`).
    pub async fn recent(
        &self,
        within: Duration,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, ApprovalError> {
        self.expire_stale().await?;
        let since = SystemTime::now() - within;
        self.blocking(move |store| store.decided_since(since, limit))
            .await
    }

    async fn close(&self, id: &str, status: Status) -> Result<ApprovalRecord, ApprovalError> {
        let key = id.to_owned();
        let record = self
            .blocking(move |store| store.close(&key, status, SystemTime::now()))
            .await?;
        self.wake(&record);
        self.changed.send_modify(|n| *n += 1);
        Ok(record)
    }
}

impl Pending {
    /// Waits for the decision, or for the expiry (the request is then marked expired). Returns
    /// the final record: a decision that raced the expiry wins, as the store decides.
    pub async fn outcome(&mut self) -> Result<ApprovalRecord, ApprovalError> {
        let left = self
            .expires
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let _ = tokio::time::timeout(left, self.decided.wait_for(|s| *s != Status::Pending)).await;
        let record = self.approvals.close(&self.id, Status::Expired).await;
        self.closed = record.is_ok();
        record
    }

    /// The client went away or cancelled: the request is withdrawn unless already decided.
    pub async fn withdraw(mut self) -> Result<ApprovalRecord, ApprovalError> {
        let record = self.approvals.close(&self.id, Status::Withdrawn).await;
        self.closed = record.is_ok();
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::SqliteStore;

    fn approvals(timeout: Duration, needed: u32) -> Arc<Approvals> {
        Approvals::new(
            Arc::new(SqliteStore::in_memory().unwrap()),
            Route {
                approver_groups: vec!["dba".into()],
                approvals_needed: needed,
                timeout,
                max_pending_per_subject: 2,
            },
            Notifier::new(Vec::new(), Duration::from_secs(1)),
            Arc::new(Audit::disabled()),
        )
    }

    fn held() -> NewRequest {
        NewRequest {
            id: new_id(),
            session_id: 1,
            subject: "agent".into(),
            groups: vec!["dba".into()],
            database: "app".into(),
            statement: "DELETE FROM t WHERE id = 1".into(),
            parameters: vec![],
            settings: vec![],
            fingerprint: 99,
            plugin: "approve-writes".into(),
            reason: "writes need approval".into(),
            access: None,
        }
    }

    async fn wait(approvals: &Arc<Approvals>, new: NewRequest) -> Pending {
        match approvals.open(new, Routing::Default).await.unwrap() {
            Opened::Waiting(pending) => pending,
            Opened::Decided(record) => panic!("decided without anyone: {record:?}"),
            Opened::Queued { id, .. } => panic!("{id} queued without its session"),
        }
    }

    fn access_request(actor: &str) -> NewRequest {
        NewRequest {
            id: new_id(),
            session_id: 0,
            statement: String::new(),
            fingerprint: 0,
            plugin: "access-rules".into(),
            reason: "production".into(),
            access: Some(AccessAsk {
                issuer: "people".into(),
                issuer_url: "https://idp.example".into(),
                actor: Some(crate::state::Actor {
                    principal: actor.into(),
                    issuer: "cluster".into(),
                    issuer_url: "https://cluster.example".into(),
                }),
                lifetime_secs: 600,
                read_only: false,
                reason: "fix invoices".into(),
            }),
            ..held()
        }
    }

    async fn queue(approvals: &Arc<Approvals>) -> (String, String) {
        match approvals
            .open(access_request("helper"), Routing::Default)
            .await
            .unwrap()
        {
            Opened::Queued { id, secret } => (id, secret),
            _ => panic!("a request for access is queued"),
        }
    }

    #[tokio::test]
    async fn a_request_for_access_waits_for_its_poller_and_neither_party_may_approve_it() {
        let approvals = approvals(Duration::from_secs(60), 1);
        let (id, secret) = queue(&approvals).await;
        for party in ["agent", "helper"] {
            assert!(matches!(
                approvals.decide(&id, &dba(party), yes()).await,
                Err(ApprovalError::SelfApproval)
            ));
        }
        let waiting = approvals
            .wait_for_decision(&id, Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(waiting.status, Status::Pending);
        let poller = {
            let approvals = approvals.clone();
            let id = id.clone();
            tokio::spawn(async move {
                approvals
                    .wait_for_decision(&id, Duration::from_secs(30))
                    .await
                    .unwrap()
                    .unwrap()
            })
        };
        approvals.decide(&id, &dba("alice"), yes()).await.unwrap();
        let decided = tokio::time::timeout(Duration::from_secs(5), poller)
            .await
            .expect("a vote wakes the poller at once")
            .unwrap();
        assert_eq!(decided.status, Status::Approved);
        assert!(!approvals.deliver(&id, "guessed").await.unwrap());
        assert!(approvals.deliver(&id, &secret).await.unwrap());
        assert!(
            !approvals.deliver(&id, &secret).await.unwrap(),
            "handed out once"
        );
    }

    #[tokio::test]
    async fn an_undecided_request_for_access_expires_for_its_poller() {
        let approvals = approvals(Duration::from_millis(50), 1);
        let (id, secret) = queue(&approvals).await;
        let record = approvals
            .wait_for_decision(&id, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.status, Status::Expired);
        assert!(!approvals.deliver(&id, &secret).await.unwrap());
        assert!(approvals.pending().await.unwrap().is_empty());
    }

    fn dba(subject: &str) -> Approver {
        Approver {
            subject: subject.into(),
            groups: vec!["dba".into()],
        }
    }

    fn yes() -> Decision {
        Decision {
            approve: true,
            reason: None,
            scope: None,
        }
    }

    #[tokio::test]
    async fn the_waiting_session_wakes_when_the_quorum_is_reached() {
        let approvals = approvals(Duration::from_secs(60), 2);
        let mut pending = wait(&approvals, held()).await;
        let id = pending.id.clone();
        let waiter = tokio::spawn(async move { pending.outcome().await.unwrap() });
        approvals.decide(&id, &dba("alice"), yes()).await.unwrap();
        assert!(!waiter.is_finished());
        approvals.decide(&id, &dba("bob"), yes()).await.unwrap();
        let record = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.status, Status::Approved);
    }

    #[tokio::test]
    async fn requesters_cannot_approve_themselves_even_in_an_approver_group() {
        let approvals = approvals(Duration::from_secs(60), 1);
        let pending = wait(&approvals, held()).await;
        let err = approvals
            .decide(&pending.id, &dba("agent"), yes())
            .await
            .unwrap_err();
        assert!(matches!(err, ApprovalError::SelfApproval));
        let outsider = Approver {
            subject: "mallory".into(),
            groups: vec!["agents".into()],
        };
        let err = approvals
            .decide(&pending.id, &outsider, yes())
            .await
            .unwrap_err();
        assert!(matches!(err, ApprovalError::NotAnApprover { .. }));
        assert_eq!(
            approvals.get(&pending.id).await.unwrap().unwrap().status,
            Status::Pending
        );
    }

    #[tokio::test]
    async fn an_undecided_request_expires_and_a_withdrawn_one_cannot_be_approved() {
        let approvals = approvals(Duration::from_millis(50), 1);
        let mut pending = wait(&approvals, held()).await;
        assert_eq!(pending.outcome().await.unwrap().status, Status::Expired);

        let approvals = self::approvals(Duration::from_secs(60), 1);
        let pending = wait(&approvals, held()).await;
        let id = pending.id.clone();
        assert_eq!(pending.withdraw().await.unwrap().status, Status::Withdrawn);
        assert!(approvals.decide(&id, &dba("alice"), yes()).await.is_err());
    }

    #[tokio::test]
    async fn a_subject_cannot_have_more_requests_waiting_than_the_limit() {
        let approvals = approvals(Duration::from_secs(60), 1);
        let first = wait(&approvals, held()).await;
        let _second = wait(&approvals, held()).await;
        assert!(matches!(
            approvals.open(held(), Routing::Default).await.err(),
            Some(ApprovalError::TooManyPending { max: 2, .. })
        ));
        let other = NewRequest {
            subject: "other".into(),
            ..held()
        };
        wait(&approvals, other).await;
        first.withdraw().await.unwrap();
        wait(&approvals, held()).await;
    }

    #[tokio::test]
    async fn a_scoped_approval_covers_the_fingerprint_for_that_subject() {
        let approvals = approvals(Duration::from_secs(60), 1);
        let pending = wait(&approvals, held()).await;
        assert!(
            approvals
                .granted("agent", "app", 99)
                .await
                .unwrap()
                .is_none()
        );
        let scoped = Decision {
            scope: Some(Duration::from_secs(600)),
            ..yes()
        };
        approvals
            .decide(&pending.id, &dba("alice"), scoped)
            .await
            .unwrap();
        let grant = approvals.granted("agent", "app", 99).await.unwrap();
        assert_eq!(grant.map(|g| g.request_id), Some(pending.id.clone()));
        assert!(
            approvals
                .granted("other", "app", 99)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_plugin_route_sets_who_decides_how_many_and_for_how_long() {
        let approvals = approvals(Duration::from_secs(60), 1);
        let route = Routing::Ask(PluginRoute {
            by: "route-by-table".into(),
            approver_groups: vec!["billing-admins".into()],
            approvals_needed: 2,
            timeout: Some(Duration::from_secs(5)),
            note: Some("billing write".into()),
        });
        let Opened::Waiting(pending) = approvals.open(held(), route).await.unwrap() else {
            panic!("a routed request waits for people");
        };
        assert_eq!(pending.timeout, Duration::from_secs(5));
        let record = approvals.get(&pending.id).await.unwrap().unwrap();
        assert_eq!(record.request.approver_groups, ["billing-admins"]);
        assert_eq!(record.request.routed_by.as_deref(), Some("route-by-table"));
        assert_eq!(record.request.note.as_deref(), Some("billing write"));
        // The default route's group is not this request's.
        assert!(matches!(
            approvals.decide(&pending.id, &dba("alice"), yes()).await,
            Err(ApprovalError::NotAnApprover { .. })
        ));
        let billing = |s: &str| Approver {
            subject: s.into(),
            groups: vec!["billing-admins".into()],
        };
        let one = approvals
            .decide(&pending.id, &billing("alice"), yes())
            .await
            .unwrap();
        assert_eq!(one.status, Status::Pending);
        let two = approvals
            .decide(&pending.id, &billing("bob"), yes())
            .await
            .unwrap();
        assert_eq!(two.status, Status::Approved);
    }

    #[tokio::test]
    async fn a_request_decided_by_a_plugin_is_recorded_with_its_vote_and_never_waits() {
        let approvals = approvals(Duration::from_secs(60), 2);
        for approve in [true, false] {
            let decided = Routing::Decided {
                by: "route-by-table".into(),
                approve,
                reason: "scratch tables".into(),
            };
            let Opened::Decided(record) = approvals.open(held(), decided).await.unwrap() else {
                panic!("a plugin's decision needs nobody");
            };
            let expected = if approve {
                Status::Approved
            } else {
                Status::Denied
            };
            assert_eq!(record.status, expected);
            assert_eq!(record.votes.len(), 1);
            assert_eq!(record.votes[0].approver, "plugin:route-by-table");
            assert_eq!(record.votes[0].reason.as_deref(), Some("scratch tables"));
        }
        assert!(approvals.pending().await.unwrap().is_empty());
    }
}
