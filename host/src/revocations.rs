//! Taking access back. A revocation names one token (`jti`), a subject or an issuer; from the
//! moment it is made, matching tokens are refused at login and every live session using one
//! ends (each session waits on [`Revocations::until_revoked`], woken by every new revocation).
//! Revocations live in the state store: they survive a restart, and gateways sharing the store
//! pick up each other's within [`POLL`]. A revocation lasts as long as any token it can match
//! may live (`identity.max_ttl`) unless made shorter or longer, then it is pruned. While it
//! lasts it also refuses tokens of a revoked subject or issuer made after it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::audit::{Audit, Event};
use crate::identity::{Act, Claims, Grant};
use crate::metrics::Metrics;
use crate::state::{Revocation, RevocationStore, Revoked, StateError};

/// How often the store is read again for revocations made by other processes sharing it.
pub const POLL: Duration = Duration::from_millis(500);

/// The revocations in force, shared by logins, sessions and the admin API.
pub struct Revocations {
    store: Arc<dyn RevocationStore>,
    audit: Arc<Audit>,
    metrics: Arc<Metrics>,
    /// How long a revocation lasts unless told otherwise.
    lasts: Duration,
    /// In force as last read from the store.
    current: ArcSwap<Vec<Revocation>>,
    /// Bumped whenever `current` changes: waiting sessions look again.
    changed: watch::Sender<u64>,
}

impl Revocations {
    /// Reads the revocations in force from `store`.
    pub fn open(
        store: Arc<dyn RevocationStore>,
        audit: Arc<Audit>,
        metrics: Arc<Metrics>,
        lasts: Duration,
    ) -> Result<Revocations, StateError> {
        let current = store.revocations(SystemTime::now())?;
        Ok(Revocations {
            store,
            audit,
            metrics,
            lasts,
            current: ArcSwap::from_pointee(current),
            changed: watch::Sender::new(0),
        })
    }

    /// The revocation in force that matches `grant`'s token, if any.
    pub fn matching(&self, grant: &Grant) -> Option<Revocation> {
        self.matching_gateway_token(
            (&grant.token_id, &grant.subject, &grant.issuer),
            (grant.origin.as_deref(), grant.origin_token_id.as_deref()),
            grant.actor.as_ref(),
        )
    }

    /// The revocation in force that matches a gateway token's claims, if any.
    pub fn matching_claims(&self, claims: &Claims) -> Option<Revocation> {
        self.matching_gateway_token(
            (&claims.jti, &claims.sub, &claims.iss),
            (claims.idp.as_deref(), claims.idp_jti.as_deref()),
            claims.act.as_ref(),
        )
    }

    /// A gateway token: its own `(jti, sub, iss)`, the external token it was exchanged for
    /// (`idp`, `idp_jti`), and who acts for its subject.
    fn matching_gateway_token(
        &self,
        (jti, subject, issuer): (&str, &str, &str),
        (idp, idp_jti): (Option<&str>, Option<&str>),
        actor: Option<&Act>,
    ) -> Option<Revocation> {
        self.matching_token(
            &[Some(jti), idp_jti, actor.and_then(|a| a.jti.as_deref())],
            &[Some(subject), actor.map(|a| a.sub.as_str())],
            &[Some(issuer), idp, actor.and_then(|a| a.iss.as_deref())],
        )
    }

    /// The revocation in force that matches a token with any of these `jti`s (its own, and
    /// the external token's it was exchanged for), any of these subjects (its `sub`, and the
    /// actor's for a token acting for someone), issued by any of `issuers` (its own `iss`, the
    /// external issuer, the actor's).
    pub fn matching_token(
        &self,
        jtis: &[Option<&str>],
        subjects: &[Option<&str>],
        issuers: &[Option<&str>],
    ) -> Option<Revocation> {
        let now = SystemTime::now();
        self.current
            .load()
            .iter()
            .find(|r| {
                r.until > now
                    && match &r.revoked {
                        Revoked::Token(t) => jtis.contains(&Some(t.as_str())),
                        Revoked::Subject(s) => subjects.contains(&Some(s.as_str())),
                        Revoked::Issuer(i) => issuers.contains(&Some(i.as_str())),
                    }
            })
            .cloned()
    }

    /// Every revocation in force.
    pub fn list(&self) -> Vec<Revocation> {
        let now = SystemTime::now();
        let current = self.current.load();
        current.iter().filter(|r| r.until > now).cloned().collect()
    }

    /// Revokes `revoked` for `lasts` (default: the longest a token may live), recorded as by
    /// `by` for `reason`. Sessions using a matching token are told at once.
    pub async fn revoke(
        &self,
        revoked: Revoked,
        by: &str,
        reason: &str,
        lasts: Option<Duration>,
    ) -> Result<Revocation, StateError> {
        let created = SystemTime::now();
        let revocation = Revocation {
            id: format!("rev-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            revoked,
            by: by.to_owned(),
            reason: reason.to_owned(),
            created,
            until: created + crate::identity::within_latest(created, lasts.unwrap_or(self.lasts)),
        };
        let store = self.store.clone();
        let stored = revocation.clone();
        tokio::task::spawn_blocking(move || store.insert_revocation(&stored))
            .await
            .map_err(|e| StateError::Corrupt(format!("revocation task failed: {e}")))??;
        self.audit.record(Event::Revocation {
            id: revocation.id.clone(),
            kind: revocation.revoked.kind(),
            value: revocation.revoked.value().to_owned(),
            by: revocation.by.clone(),
            reason: revocation.reason.clone(),
            until: unix_seconds(revocation.until),
        });
        self.metrics.revocations.inc();
        tracing::warn!(
            revocation = %revocation.id,
            kind = revocation.revoked.kind(),
            value = %revocation.revoked.value(),
            by = %revocation.by,
            "tokens revoked"
        );
        // Read-copy-update: a concurrent revocation or refresh never drops this one.
        let added = revocation.clone();
        self.current.rcu(|current| {
            let mut next = Vec::clone(current);
            next.push(added.clone());
            next
        });
        self.changed.send_modify(|n| *n += 1);
        Ok(revocation)
    }

    /// Reads the store again (for revocations made elsewhere) and prunes ended ones.
    pub async fn refresh(&self) -> Result<(), StateError> {
        let store = self.store.clone();
        let read = tokio::task::spawn_blocking(move || {
            let now = SystemTime::now();
            store.prune_revocations(now)?;
            store.revocations(now)
        })
        .await
        .map_err(|e| StateError::Corrupt(format!("revocation task failed: {e}")))??;
        // Revocations are only ever added (and end by time): what this process holds and the
        // store has not returned yet (made here while it was read) stays.
        let now = SystemTime::now();
        let mut grew = false;
        self.current.rcu(|current| {
            let mut next = read.clone();
            next.extend(
                current
                    .iter()
                    .filter(|r| r.until > now && !read.iter().any(|s| s.id == r.id))
                    .cloned(),
            );
            grew = next.iter().any(|r| !current.iter().any(|c| c.id == r.id));
            next
        });
        if grew {
            self.changed.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    /// Changes with every revocation this gateway learns of.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Completes with the revocation that takes `grant`'s token back, once there is one.
    pub async fn until_revoked(&self, grant: &Grant) -> Revocation {
        let mut changed = self.changed.subscribe();
        loop {
            if let Some(revocation) = self.matching(grant) {
                return revocation;
            }
            if changed.changed().await.is_err() {
                // The service is gone with the gateway: nothing will be revoked any more.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Reads the store every [`POLL`] until `stop`: revocations made by other gateways (or
    /// by the CLI on this host) reach this gateway's sessions too.
    pub async fn follow_store(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(POLL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = stop.cancelled() => return,
            }
            if let Err(e) = self.refresh().await {
                tracing::error!(error = %e, "reading revocations from the state store failed");
            }
        }
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::SqliteStore;

    fn grant(jti: &str, subject: &str) -> Grant {
        Grant {
            subject: subject.into(),
            database: "app".into(),
            groups: Vec::new(),
            token_id: jti.into(),
            issuer: "sluice".into(),
            origin: None,
            origin_token_id: None,
            actor: None,
            minted: None,
            read_only: false,
            expires_at: SystemTime::now() + Duration::from_secs(300),
        }
    }

    fn revocations(store: Arc<SqliteStore>) -> Revocations {
        Revocations::open(
            store,
            Arc::new(Audit::disabled()),
            Arc::new(Metrics::new()),
            Duration::from_secs(3600),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_revocation_matches_its_token_subject_or_issuer_and_wakes_waiting_sessions() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let revocations = Arc::new(revocations(store.clone()));
        let (mine, other) = (grant("t1", "bot"), grant("t2", "someone"));
        assert!(revocations.matching(&mine).is_none());
        let waiting = {
            let revocations = revocations.clone();
            let mine = mine.clone();
            tokio::spawn(async move { revocations.until_revoked(&mine).await })
        };
        let made = revocations
            .revoke(Revoked::Token("t1".into()), "admin", "leaked", None)
            .await
            .unwrap();
        assert_eq!(waiting.await.unwrap().id, made.id);
        assert!(revocations.matching(&other).is_none());
        revocations
            .revoke(Revoked::Subject("someone".into()), "admin", "left", None)
            .await
            .unwrap();
        assert!(revocations.matching(&other).is_some());
        revocations
            .revoke(Revoked::Issuer("sluice".into()), "admin", "key lost", None)
            .await
            .unwrap();
        assert!(revocations.matching(&grant("t3", "anyone")).is_some());
        // Kept in the store: a gateway opening it again refuses the same tokens.
        let reopened = self::revocations(store);
        assert_eq!(reopened.list().len(), 3);
        assert!(reopened.matching(&mine).is_some());
    }

    #[tokio::test]
    async fn a_revocation_for_longer_than_any_time_lasts_until_the_end_of_9999() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let revocations = revocations(store.clone());
        let revocation = revocations
            .revoke(
                Revoked::Subject("bot".into()),
                "admin",
                "for good",
                Some(Duration::MAX),
            )
            .await
            .unwrap();
        // 9999-12-31T23:59:59Z.
        assert_eq!(unix_seconds(revocation.until), 253_402_300_799);
        assert!(revocations.matching(&grant("t1", "bot")).is_some());
        let stored = store.revocations(SystemTime::now()).unwrap();
        assert_eq!(stored.len(), 1);
    }

    #[tokio::test]
    async fn a_revocation_made_by_another_process_is_picked_up_from_the_store() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let here = revocations(store.clone());
        let elsewhere = revocations(store);
        elsewhere
            .revoke(Revoked::Subject("bot".into()), "admin", "leaked", None)
            .await
            .unwrap();
        assert!(here.matching(&grant("t1", "bot")).is_none());
        here.refresh().await.unwrap();
        assert!(here.matching(&grant("t1", "bot")).is_some());
    }

    #[tokio::test]
    async fn an_ended_revocation_matches_nothing_and_is_pruned() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let ended = SystemTime::now() - Duration::from_secs(1);
        store
            .insert_revocation(&Revocation {
                id: "rev-old".into(),
                revoked: Revoked::Subject("bot".into()),
                by: "admin".into(),
                reason: "over".into(),
                created: ended - Duration::from_secs(60),
                until: ended,
            })
            .unwrap();
        let revocations = revocations(store.clone());
        assert!(revocations.matching(&grant("t1", "bot")).is_none());
        revocations.refresh().await.unwrap();
        assert!(revocations.list().is_empty());
        assert!(store.revocations(UNIX_EPOCH).unwrap().is_empty(), "pruned");
    }
}
