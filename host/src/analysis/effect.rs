//! When a statement can change something that outlives it — data, schema, another session, a
//! file, a remote system through a function — as far as its parse tree tells. A durable audit
//! log must have a statement's record on disk before the statement may do that; the record of
//! one that cannot may follow within the log's `sync_delay`.

use serde_json::Value;

use super::kind::StatementKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effect {
    /// Not by itself: a plain read, SHOW, opening or rolling back a transaction or savepoint.
    None,
    /// Only outside a transaction block, where it commits as it runs; inside one, only through a
    /// later COMMIT (which has an effect of its own).
    OutsideBlock,
    /// At any time: COMMIT and PREPARE TRANSACTION, DDL, COPY, utility commands, anything that
    /// calls a function (a function may do work no rollback undoes).
    AtOnce,
}

impl Effect {
    /// Whether running the statement now may change something, given whether the session is
    /// inside a transaction block.
    pub fn at_once(self, in_block: bool) -> bool {
        match self {
            Effect::None => false,
            Effect::OutsideBlock => !in_block,
            Effect::AtOnce => true,
        }
    }
}

/// The effect of one statement of `kind` whose top node is `node`.
pub(super) fn effect(
    kind: StatementKind,
    node: &Value,
    functions: &[String],
    writes: bool,
    copy_program: bool,
) -> Effect {
    use StatementKind as K;
    if !functions.is_empty() || copy_program {
        return Effect::AtOnce;
    }
    match kind {
        K::Select | K::Show if !writes => Effect::None,
        // pg_query's TransactionStmtKind: 1 BEGIN, 2 START, 3 COMMIT, 4 ROLLBACK, 5 SAVEPOINT,
        // 6 RELEASE, 7 ROLLBACK TO, 8 PREPARE TRANSACTION, 9 COMMIT PREPARED, 10 ROLLBACK
        // PREPARED.
        K::Transaction => match node.get("kind").and_then(Value::as_i64) {
            Some(1 | 2 | 4 | 5 | 6 | 7) => Effect::None,
            _ => Effect::AtOnce,
        },
        K::Insert | K::Update | K::Delete | K::Merge => Effect::OutsideBlock,
        _ => Effect::AtOnce,
    }
}

#[cfg(test)]
mod tests {
    use super::Effect;
    use crate::analysis::analyze_uncached;

    fn effect(sql: &str) -> Effect {
        let statements = analyze_uncached(sql).unwrap();
        statements.iter().map(|s| s.effect).max().unwrap()
    }

    #[test]
    fn reads_and_transaction_openings_have_no_effect_of_their_own() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            "SELECT * FROM a JOIN b USING (id) FOR UPDATE",
            "SHOW work_mem",
            "BEGIN",
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "ROLLBACK",
            "ABORT",
            "SAVEPOINT s",
            "RELEASE SAVEPOINT s",
            "ROLLBACK TO SAVEPOINT s",
        ] {
            assert_eq!(effect(sql), Effect::None, "{sql}");
        }
    }

    #[test]
    fn plain_writes_take_effect_only_outside_a_transaction_block() {
        for sql in [
            "UPDATE pgbench_accounts SET abalance = abalance + 5 WHERE aid = 1",
            "INSERT INTO pgbench_history (tid, mtime) VALUES (1, CURRENT_TIMESTAMP)",
            "DELETE FROM t WHERE id = 1",
        ] {
            assert_eq!(effect(sql), Effect::OutsideBlock, "{sql}");
            assert!(effect(sql).at_once(false) && !effect(sql).at_once(true));
        }
    }

    #[test]
    fn commits_ddl_copy_and_function_calls_take_effect_at_once() {
        for sql in [
            "COMMIT",
            "END",
            "PREPARE TRANSACTION 'x'",
            "COMMIT PREPARED 'x'",
            "ROLLBACK PREPARED 'x'",
            "CREATE TABLE t (id int)",
            "SELECT nextval('s')",
            "SELECT pg_terminate_backend(42)",
            "UPDATE t SET v = f(v)",
            "SELECT * INTO t2 FROM t",
            "COPY t FROM STDIN",
            "VACUUM t",
            "SET work_mem = '1GB'",
            "DO $$ BEGIN END $$",
            "SELECT 1; COMMIT",
        ] {
            assert_eq!(effect(sql), Effect::AtOnce, "{sql}");
            assert!(effect(sql).at_once(true));
        }
    }
}
