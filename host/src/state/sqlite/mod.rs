//! The SQLite store: one file in `data_dir`, WAL mode, schema versioned with `user_version`.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use super::store::{
    ApprovalRecord, ApprovalRequest, ApprovalStore, ScopedGrant, StateError, Status, Vote,
};

mod revocations;

/// Schema steps, applied in order; `user_version` counts those already applied. Never edit a
/// step that has shipped: add one.
const MIGRATIONS: &[&str] = &[
    // 1: approvals, votes, scoped grants.
    "CREATE TABLE approval_requests (
         id TEXT PRIMARY KEY,
         session_id INTEGER NOT NULL,
         subject TEXT NOT NULL,
         groups TEXT NOT NULL,
         database TEXT NOT NULL,
         statement TEXT NOT NULL,
         parameters TEXT NOT NULL,
         fingerprint INTEGER NOT NULL,
         plugin TEXT NOT NULL,
         reason TEXT NOT NULL,
         approver_groups TEXT NOT NULL,
         approvals_needed INTEGER NOT NULL,
         created_ms INTEGER NOT NULL,
         expires_ms INTEGER NOT NULL,
         status TEXT NOT NULL,
         decided_ms INTEGER
     );
     CREATE INDEX approval_requests_pending ON approval_requests (status, created_ms);
     CREATE TABLE approval_votes (
         request_id TEXT NOT NULL REFERENCES approval_requests (id),
         approver TEXT NOT NULL,
         approve INTEGER NOT NULL,
         reason TEXT,
         at_ms INTEGER NOT NULL,
         scope_ms INTEGER,
         PRIMARY KEY (request_id, approver)
     );
     CREATE TABLE scoped_grants (
         subject TEXT NOT NULL,
         database TEXT NOT NULL,
         fingerprint INTEGER NOT NULL,
         until_ms INTEGER NOT NULL,
         request_id TEXT NOT NULL REFERENCES approval_requests (id)
     );
     CREATE INDEX scoped_grants_lookup ON scoped_grants (subject, database, fingerprint);",
    // 2: routing by approval plugins.
    "ALTER TABLE approval_requests ADD COLUMN routed_by TEXT;
     ALTER TABLE approval_requests ADD COLUMN note TEXT;",
    // 3: the session's changes of what names mean, shown with the statement.
    "ALTER TABLE approval_requests ADD COLUMN settings TEXT NOT NULL DEFAULT '[]';",
    // 4: revoked tokens, subjects and issuers.
    "CREATE TABLE revocations (
         id TEXT PRIMARY KEY,
         kind TEXT NOT NULL,
         value TEXT NOT NULL,
         revoked_by TEXT NOT NULL,
         reason TEXT NOT NULL,
         created_ms INTEGER NOT NULL,
         until_ms INTEGER NOT NULL
     );
     CREATE INDEX revocations_until ON revocations (until_ms);",
    // 5: requests for access, and when an approved one's token was handed out.
    "ALTER TABLE approval_requests ADD COLUMN access TEXT;
     ALTER TABLE approval_requests ADD COLUMN collect_hash TEXT;
     ALTER TABLE approval_requests ADD COLUMN delivered_ms INTEGER;",
];

pub struct SqliteStore {
    connection: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore, StateError> {
        let connection = Connection::open(path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        SqliteStore::with_connection(connection)
    }

    /// A store that lives in memory only (tests).
    pub fn in_memory() -> Result<SqliteStore, StateError> {
        SqliteStore::with_connection(Connection::open_in_memory()?)
    }

    fn with_connection(mut connection: Connection) -> Result<SqliteStore, StateError> {
        connection.pragma_update(None, "foreign_keys", "ON")?;
        connection.busy_timeout(Duration::from_secs(5))?;
        migrate(&mut connection)?;
        Ok(SqliteStore {
            connection: Mutex::new(connection),
        })
    }

    fn transaction<T>(
        &self,
        work: impl FnOnce(&Transaction<'_>) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let mut connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        let tx = connection.transaction()?;
        let result = work(&tx)?;
        tx.commit()?;
        Ok(result)
    }
}

fn migrate(connection: &mut Connection) -> Result<(), StateError> {
    let applied: usize = connection.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if applied > MIGRATIONS.len() {
        return Err(StateError::Corrupt(format!(
            "schema version {applied} is newer than this sluice knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = connection.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", step + 1)?;
        tx.commit()?;
    }
    Ok(())
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A stored time; one after 9999-12-31T23:59:59Z (a period stored before periods were cut to
/// end by then) reads as that, a time that can still be added to and shown.
fn time(ms: i64) -> SystemTime {
    let latest = crate::identity::LATEST_EXP * 1000;
    UNIX_EPOCH + Duration::from_millis((ms.max(0) as u64).min(latest))
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

const REQUEST_COLUMNS: &str = "id, session_id, subject, groups, database, statement, parameters, \
     fingerprint, plugin, reason, approver_groups, approvals_needed, created_ms, expires_ms, \
     status, decided_ms, routed_by, note, settings, access, delivered_ms, collect_hash";

/// A JSON-encoded column; unreadable JSON is an error, never an empty default.
fn json_column<T: serde::de::DeserializeOwned>(row: &Row<'_>, index: usize) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// A request, its status, when it was decided and when its token was delivered.
type Row4 = (ApprovalRequest, String, Option<i64>, Option<i64>);

fn read_request(row: &Row<'_>) -> rusqlite::Result<Row4> {
    let request = ApprovalRequest {
        id: row.get(0)?,
        session_id: row.get::<_, i64>(1)? as u64,
        subject: row.get(2)?,
        groups: json_column(row, 3)?,
        database: row.get(4)?,
        statement: row.get(5)?,
        parameters: json_column(row, 6)?,
        // Stored as the same 64 bits in SQLite's signed integer.
        fingerprint: row.get::<_, i64>(7)? as u64,
        plugin: row.get(8)?,
        reason: row.get(9)?,
        approver_groups: json_column(row, 10)?,
        approvals_needed: row.get(11)?,
        routed_by: row.get(16)?,
        note: row.get(17)?,
        settings: json_column(row, 18)?,
        created: time(row.get(12)?),
        expires: time(row.get(13)?),
        access: match row.get::<_, Option<String>>(19)? {
            None => None,
            Some(_) => Some(json_column(row, 19)?),
        },
        collect_hash: row.get(21)?,
    };
    Ok((request, row.get(14)?, row.get(15)?, row.get(20)?))
}

fn load(tx: &Transaction<'_>, id: &str) -> Result<Option<ApprovalRecord>, StateError> {
    let found = tx
        .query_row(
            &format!("SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE id = ?1"),
            [id],
            read_request,
        )
        .optional()?;
    let Some((request, status, decided, delivered)) = found else {
        return Ok(None);
    };
    let status = Status::parse(&status).ok_or_else(|| StateError::Corrupt(status.clone()))?;
    let mut votes = Vec::new();
    let mut query = tx.prepare(
        "SELECT approver, approve, reason, at_ms, scope_ms FROM approval_votes
         WHERE request_id = ?1 ORDER BY at_ms, approver",
    )?;
    let rows = query.query_map([id], |row| {
        Ok(Vote {
            approver: row.get(0)?,
            approve: row.get(1)?,
            reason: row.get(2)?,
            at: time(row.get(3)?),
            scope: row
                .get::<_, Option<i64>>(4)?
                .map(|ms| Duration::from_millis(ms.max(0) as u64)),
        })
    })?;
    for vote in rows {
        votes.push(vote?);
    }
    Ok(Some(ApprovalRecord {
        request,
        status,
        votes,
        decided: decided.map(time),
        delivered: delivered.map(time),
    }))
}

fn set_status(
    tx: &Transaction<'_>,
    id: &str,
    status: Status,
    at: SystemTime,
) -> Result<(), StateError> {
    tx.execute(
        "UPDATE approval_requests SET status = ?2, decided_ms = ?3 WHERE id = ?1",
        params![id, status.as_str(), millis(at)],
    )?;
    Ok(())
}

fn insert(tx: &Transaction<'_>, r: &ApprovalRequest) -> Result<(), StateError> {
    tx.execute(
        &format!(
            "INSERT INTO approval_requests ({REQUEST_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, 'pending', NULL, ?15, ?16, ?17, ?18, NULL, ?19)"
        ),
        params![
            r.id,
            r.session_id as i64,
            r.subject,
            json(&r.groups),
            r.database,
            r.statement,
            json(&r.parameters),
            r.fingerprint as i64,
            r.plugin,
            r.reason,
            json(&r.approver_groups),
            r.approvals_needed,
            millis(r.created),
            millis(r.expires),
            r.routed_by,
            r.note,
            json(&r.settings),
            r.access.as_ref().map(json),
            r.collect_hash,
        ],
    )?;
    Ok(())
}

impl ApprovalStore for SqliteStore {
    fn insert_request(&self, r: &ApprovalRequest) -> Result<(), StateError> {
        self.transaction(|tx| insert(tx, r))
    }

    fn expire_stale(&self, now: SystemTime) -> Result<Vec<ApprovalRecord>, StateError> {
        self.transaction(|tx| {
            let ids: Vec<String> = tx
                .prepare(
                    "SELECT id FROM approval_requests WHERE status = 'pending' AND expires_ms <= ?1",
                )?
                .query_map([millis(now)], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let mut expired = Vec::with_capacity(ids.len());
            for id in ids {
                let Some(record) = load(tx, &id)? else {
                    continue;
                };
                set_status(tx, &id, Status::Expired, record.request.expires)?;
                expired.extend(load(tx, &id)?);
            }
            Ok(expired)
        })
    }

    fn request(&self, id: &str) -> Result<Option<ApprovalRecord>, StateError> {
        self.transaction(|tx| load(tx, id))
    }

    fn pending(&self) -> Result<Vec<ApprovalRecord>, StateError> {
        self.transaction(|tx| {
            let ids: Vec<String> = tx
                .prepare(
                    "SELECT id FROM approval_requests WHERE status = 'pending' ORDER BY created_ms, id",
                )?
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let mut records = Vec::with_capacity(ids.len());
            for id in ids {
                records.extend(load(tx, &id)?);
            }
            Ok(records)
        })
    }

    fn decided_since(
        &self,
        since: SystemTime,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StateError> {
        self.transaction(|tx| {
            let ids: Vec<String> = tx
                .prepare(
                    "SELECT id FROM approval_requests WHERE status != 'pending' AND decided_ms >= ?1
                     ORDER BY decided_ms DESC, id LIMIT ?2",
                )?
                .query_map(params![millis(since), limit as i64], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let mut records = Vec::with_capacity(ids.len());
            for id in ids {
                records.extend(load(tx, &id)?);
            }
            Ok(records)
        })
    }

    fn insert_within_limit(&self, r: &ApprovalRequest, max: usize) -> Result<(), StateError> {
        self.transaction(|tx| {
            if max > 0 {
                let waiting: usize = tx.query_row(
                    "SELECT count(*) FROM approval_requests
                     WHERE subject = ?1 AND status = 'pending' AND expires_ms > ?2",
                    params![r.subject, millis(SystemTime::now())],
                    |row| row.get(0),
                )?;
                if waiting >= max {
                    return Err(StateError::TooManyPending {
                        subject: r.subject.clone(),
                        max,
                    });
                }
            }
            insert(tx, r)
        })
    }

    fn vote(&self, id: &str, vote: &Vote) -> Result<ApprovalRecord, StateError> {
        self.transaction(|tx| {
            let record = load(tx, id)?.ok_or_else(|| StateError::UnknownRequest(id.into()))?;
            if record.status != Status::Pending {
                return Err(StateError::Closed {
                    id: id.into(),
                    status: record.status.as_str(),
                });
            }
            if vote.at >= record.request.expires {
                set_status(tx, id, Status::Expired, record.request.expires)?;
                return load(tx, id)?.ok_or_else(|| StateError::UnknownRequest(id.into()));
            }
            if record.votes.iter().any(|v| v.approver == vote.approver) {
                return Err(StateError::AlreadyVoted {
                    id: id.into(),
                    approver: vote.approver.clone(),
                });
            }
            tx.execute(
                "INSERT INTO approval_votes (request_id, approver, approve, reason, at_ms, scope_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    id,
                    vote.approver,
                    vote.approve,
                    vote.reason,
                    millis(vote.at),
                    vote.scope.map(|d| d.as_millis() as i64),
                ],
            )?;
            let approvals = record.votes.iter().filter(|v| v.approve).count() + 1;
            if !vote.approve {
                set_status(tx, id, Status::Denied, vote.at)?;
            } else if approvals >= record.request.approvals_needed.max(1) as usize {
                set_status(tx, id, Status::Approved, vote.at)?;
                if let Some(scope) = vote.scope {
                    let r = &record.request;
                    tx.execute(
                        "INSERT INTO scoped_grants (subject, database, fingerprint, until_ms, request_id)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![
                            r.subject,
                            r.database,
                            r.fingerprint as i64,
                            millis(vote.at + scope),
                            id
                        ],
                    )?;
                }
            }
            load(tx, id)?.ok_or_else(|| StateError::UnknownRequest(id.into()))
        })
    }

    fn close(
        &self,
        id: &str,
        status: Status,
        at: SystemTime,
    ) -> Result<ApprovalRecord, StateError> {
        self.transaction(|tx| {
            let record = load(tx, id)?.ok_or_else(|| StateError::UnknownRequest(id.into()))?;
            if record.status != Status::Pending {
                return Ok(record);
            }
            set_status(tx, id, status, at)?;
            load(tx, id)?.ok_or_else(|| StateError::UnknownRequest(id.into()))
        })
    }

    fn deliver(&self, id: &str, collect_hash: &str, at: SystemTime) -> Result<bool, StateError> {
        self.transaction(|tx| {
            let changed = tx.execute(
                "UPDATE approval_requests SET delivered_ms = ?2
                 WHERE id = ?1 AND status = 'approved' AND access IS NOT NULL
                   AND collect_hash = ?3 AND delivered_ms IS NULL",
                params![id, millis(at), collect_hash],
            )?;
            Ok(changed == 1)
        })
    }

    fn grant_for(
        &self,
        subject: &str,
        database: &str,
        fingerprint: u64,
        now: SystemTime,
    ) -> Result<Option<ScopedGrant>, StateError> {
        self.transaction(|tx| {
            Ok(tx
                .query_row(
                    "SELECT until_ms, request_id FROM scoped_grants
                     WHERE subject = ?1 AND database = ?2 AND fingerprint = ?3 AND until_ms > ?4
                     ORDER BY until_ms DESC LIMIT 1",
                    params![subject, database, fingerprint as i64, millis(now)],
                    |row| {
                        Ok(ScopedGrant {
                            subject: subject.to_owned(),
                            database: database.to_owned(),
                            fingerprint,
                            until: time(row.get(0)?),
                            request_id: row.get(1)?,
                        })
                    },
                )
                .optional()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str, needed: u32) -> ApprovalRequest {
        let now = SystemTime::now();
        ApprovalRequest {
            id: id.into(),
            session_id: 7,
            subject: "agent".into(),
            groups: vec!["agents".into()],
            database: "app".into(),
            statement: "DELETE FROM orders WHERE id = $1".into(),
            parameters: vec![Some("42".into()), None],
            settings: vec!["SET search_path = app".into()],
            fingerprint: u64::MAX - 3,
            plugin: "approve-writes".into(),
            reason: "writes need approval".into(),
            approver_groups: vec!["dba".into()],
            approvals_needed: needed,
            routed_by: Some("route-by-table".into()),
            note: Some("writes to billing.invoices".into()),
            created: now,
            expires: now + Duration::from_secs(300),
            access: None,
            collect_hash: None,
        }
    }

    fn vote(approver: &str, approve: bool) -> Vote {
        Vote {
            approver: approver.into(),
            approve,
            reason: Some(format!("{approver} says {approve}")),
            at: SystemTime::now(),
            scope: None,
        }
    }

    #[test]
    fn a_request_reads_back_exactly_as_stored() {
        let store = SqliteStore::in_memory().unwrap();
        let r = request("a1", 1);
        store.insert_request(&r).unwrap();
        let record = store.request("a1").unwrap().unwrap();
        // Times are kept to the millisecond.
        assert_eq!(millis(record.request.created), millis(r.created));
        let mut expected = r.clone();
        expected.created = record.request.created;
        expected.expires = record.request.expires;
        assert_eq!(record.request, expected);
        assert_eq!(record.status, Status::Pending);
        assert_eq!(store.pending().unwrap().len(), 1);
    }

    #[test]
    fn quorum_counts_distinct_approvers_and_one_refusal_denies() {
        let store = SqliteStore::in_memory().unwrap();
        store.insert_request(&request("q", 2)).unwrap();
        assert_eq!(
            store.vote("q", &vote("alice", true)).unwrap().status,
            Status::Pending
        );
        assert!(matches!(
            store.vote("q", &vote("alice", true)),
            Err(StateError::AlreadyVoted { .. })
        ));
        let done = store.vote("q", &vote("bob", true)).unwrap();
        assert_eq!(done.status, Status::Approved);
        assert_eq!(done.votes.len(), 2);
        assert!(matches!(
            store.vote("q", &vote("carol", false)),
            Err(StateError::Closed { .. })
        ));

        store.insert_request(&request("d", 2)).unwrap();
        store.vote("d", &vote("alice", true)).unwrap();
        assert_eq!(
            store.vote("d", &vote("bob", false)).unwrap().status,
            Status::Denied
        );
        assert!(store.pending().unwrap().is_empty());
    }

    #[test]
    fn a_vote_after_expiry_expires_the_request() {
        let store = SqliteStore::in_memory().unwrap();
        let mut r = request("e", 1);
        r.expires = r.created + Duration::from_millis(1);
        store.insert_request(&r).unwrap();
        let mut late = vote("alice", true);
        late.at = r.created + Duration::from_secs(1);
        let record = store.vote("e", &late).unwrap();
        assert_eq!(record.status, Status::Expired);
        assert!(record.votes.is_empty());
    }

    #[test]
    fn closing_keeps_a_decision_already_made() {
        let store = SqliteStore::in_memory().unwrap();
        store.insert_request(&request("c", 1)).unwrap();
        store.vote("c", &vote("alice", true)).unwrap();
        let record = store
            .close("c", Status::Withdrawn, SystemTime::now())
            .unwrap();
        assert_eq!(record.status, Status::Approved);
        store.insert_request(&request("w", 1)).unwrap();
        let record = store
            .close("w", Status::Withdrawn, SystemTime::now())
            .unwrap();
        assert_eq!(record.status, Status::Withdrawn);
    }

    #[test]
    fn a_scoped_approval_grants_that_fingerprint_to_that_subject_until_it_ends() {
        let store = SqliteStore::in_memory().unwrap();
        let r = request("s", 1);
        store.insert_request(&r).unwrap();
        let mut scoped = vote("alice", true);
        scoped.scope = Some(Duration::from_secs(600));
        store.vote("s", &scoped).unwrap();
        let now = SystemTime::now();
        let grant = store
            .grant_for("agent", "app", r.fingerprint, now)
            .unwrap()
            .expect("granted");
        assert_eq!(grant.request_id, "s");
        assert!(
            store
                .grant_for("other", "app", r.fingerprint, now)
                .unwrap()
                .is_none()
        );
        assert!(store.grant_for("agent", "app", 1, now).unwrap().is_none());
        assert!(
            store
                .grant_for("agent", "other", r.fingerprint, now)
                .unwrap()
                .is_none()
        );
        let later = now + Duration::from_secs(601);
        assert!(
            store
                .grant_for("agent", "app", r.fingerprint, later)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_store_survives_a_reopen_and_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        SqliteStore::open(&path)
            .unwrap()
            .insert_request(&request("p", 1))
            .unwrap();
        let reopened = SqliteStore::open(&path).unwrap();
        assert!(reopened.request("p").unwrap().is_some());
        drop(reopened);
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StateError::Corrupt(_))
        ));
    }

    #[test]
    fn a_store_written_before_routing_existed_is_migrated_with_its_requests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let mut old = Connection::open(&path).unwrap();
            let tx = old.transaction().unwrap();
            tx.execute_batch(MIGRATIONS[0]).unwrap();
            tx.pragma_update(None, "user_version", 1).unwrap();
            tx.execute(
                "INSERT INTO approval_requests VALUES ('old', 1, 'agent', '[]', 'app', 'DELETE FROM t', \
                 '[]', 5, 'approve-writes', 'writes', '[\"approvers\"]', 1, 0, 99999999999999, 'pending', NULL)",
                [],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let record = store.request("old").unwrap().unwrap();
        assert_eq!(record.request.statement, "DELETE FROM t");
        assert_eq!(record.request.routed_by, None);
        assert_eq!(record.request.note, None);
        store.insert_request(&request("new", 1)).unwrap();
        let new = store.request("new").unwrap().unwrap();
        assert_eq!(new.request.routed_by.as_deref(), Some("route-by-table"));
    }
}
