#!/usr/bin/env bash
# The audit log's cost: pgbench through Sluice with auditing off, with `durability = "write"`,
# `"fsync"` and `"fsync-before-forward"` (group commit), same machine, same run, interleaved
# rounds. Every gateway here speaks plain TCP and loads no plugins: this isolates the log.
#
#   bench/audit.sh                        # 3 rounds of 10 s per scenario and target
#   ROUNDS=5 DURATION=20 bench/audit.sh
#   PG_DURABLE=0 bench/audit.sh           # Postgres with fsync and synchronous_commit off
#
# Postgres keeps fsync and synchronous_commit on by default here: the question is what a
# durable audit log adds in front of a durable database. Prints TPS (median over rounds), each
# target's ratio to auditing off and the gateway's CPU per statement; then verifies every log.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-16}
export PG_DURABLE=${PG_DURABLE:-1}

source bench/lib.sh

start_sluice audit-off prefer off
start_sluice audit-write prefer write
start_sluice audit-fsync prefer fsync
start_sluice audit-fsync-fwd prefer fsync-before-forward
targets=(audit-off audit-write audit-fsync audit-fsync-fwd)
BASELINE=audit-off

echo "# $(date -u +%FT%TZ) $(nproc) cores; rounds=$ROUNDS duration=${DURATION}s scale=$SCALE clients=$CLIENTS; postgres fsync/synchronous_commit $([ "$PG_DURABLE" = 1 ] && echo on || echo off)"
measure_header
# TPC-B-like: BEGIN, three UPDATEs, a SELECT, an INSERT, END.
STATEMENTS_PER_TX=7 measure "tpcb-like c=$CLIENTS" -c "$CLIENTS" -j 2 -M simple
STATEMENTS_PER_TX=1 measure "select-only c=$CLIENTS" -c "$CLIENTS" -j 2 -M simple -S
for t in audit-write audit-fsync audit-fsync-fwd; do
    records=$({ cat "$work/$t"/data/audit/audit.jsonl* 2>/dev/null || true; } | wc -l)
    # --config: every file of the chain, rotated ones included, and the key.
    if out=$("$SLUICE" audit verify --config "$work/$t/sluice.toml" 2>&1); then
        echo "# $t: $records records, audit verify ok"
    else
        echo "# $t: $records records, audit verify FAILED"
        grep -v '^note' <<<"$out" | sed 's/^/#   /'
    fi
done
