//! The SQLite store's revocations: kept until they end, then pruned.

use super::*;
use crate::state::revocations::{Revocation, RevocationStore, Revoked};

impl RevocationStore for SqliteStore {
    fn insert_revocation(&self, r: &Revocation) -> Result<(), StateError> {
        self.transaction(|tx| {
            tx.execute(
                "INSERT INTO revocations (id, kind, value, revoked_by, reason, created_ms, until_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    r.id,
                    r.revoked.kind(),
                    r.revoked.value(),
                    r.by,
                    r.reason,
                    millis(r.created),
                    millis(r.until)
                ],
            )?;
            Ok(())
        })
    }

    fn revocations(&self, now: SystemTime) -> Result<Vec<Revocation>, StateError> {
        self.transaction(|tx| {
            let mut query = tx.prepare(
                "SELECT id, kind, value, revoked_by, reason, created_ms, until_ms FROM revocations
                 WHERE until_ms > ?1 ORDER BY created_ms, id",
            )?;
            let rows = query.query_map([millis(now)], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, i64>(5)?,
                    row.get::<_, i64>(6)?,
                ))
            })?;
            let mut found = Vec::new();
            for row in rows {
                let (id, kind, value, by, reason, created, until) = row?;
                // An unreadable kind is refused, never read as revoking nothing.
                let revoked = Revoked::from_parts(&kind, value)
                    .ok_or_else(|| StateError::Corrupt(format!("revocation {id}: kind {kind}")))?;
                found.push(Revocation {
                    id,
                    revoked,
                    by,
                    reason,
                    created: time(created),
                    until: time(until),
                });
            }
            Ok(found)
        })
    }

    fn prune_revocations(&self, now: SystemTime) -> Result<usize, StateError> {
        self.transaction(|tx| {
            Ok(tx.execute(
                "DELETE FROM revocations WHERE until_ms <= ?1",
                [millis(now)],
            )?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_stored_past_9999_reads_back_ending_then() {
        // As a gateway stored it before periods were cut to end by 9999.
        let store = SqliteStore::in_memory().unwrap();
        let now = SystemTime::now();
        store
            .insert_revocation(&Revocation {
                id: "r-old".into(),
                revoked: Revoked::Subject("bot".into()),
                by: "admin".into(),
                reason: "for good".into(),
                created: now,
                until: UNIX_EPOCH + Duration::from_secs(1_000_000_000_000),
            })
            .unwrap();
        let read = store.revocations(now).unwrap();
        let latest = UNIX_EPOCH + Duration::from_secs(crate::identity::LATEST_EXP);
        assert_eq!(read[0].until, latest);
        assert_eq!(
            humantime::format_rfc3339_seconds(read[0].until).to_string(),
            "9999-12-31T23:59:59Z"
        );
    }

    #[test]
    fn revocations_are_kept_until_they_end_and_then_pruned() {
        let store = SqliteStore::in_memory().unwrap();
        // Stored to the millisecond.
        let now = time(millis(SystemTime::now()));
        let revocation = |id: &str, revoked: Revoked, lasts: u64| Revocation {
            id: id.into(),
            revoked,
            by: "admin".into(),
            reason: "leaked".into(),
            created: now,
            until: now + Duration::from_secs(lasts),
        };
        store
            .insert_revocation(&revocation("r1", Revoked::Token("t1".into()), 60))
            .unwrap();
        store
            .insert_revocation(&revocation("r2", Revoked::Subject("bot".into()), 600))
            .unwrap();
        assert_eq!(store.revocations(now).unwrap().len(), 2);
        let later = now + Duration::from_secs(120);
        let left = store.revocations(later).unwrap();
        assert_eq!(
            left,
            vec![revocation("r2", Revoked::Subject("bot".into()), 600)]
        );
        assert_eq!(store.prune_revocations(later).unwrap(), 1);
        assert_eq!(store.prune_revocations(later).unwrap(), 0);
        assert_eq!(store.revocations(now).unwrap().len(), 1);
    }
}
