#!/usr/bin/env bash
# The audit log's cost: pgbench through Sluice with auditing off, with `durability = "write"`,
# `"fsync"` and `"fsync-before-forward"` (group commit), same machine, same run, interleaved
# rounds.
#
#   bench/audit.sh                        # 3 rounds of 10 s per scenario and target
#   ROUNDS=5 DURATION=20 bench/audit.sh
#   PG_DURABLE=0 bench/audit.sh           # Postgres with fsync and synchronous_commit off
#
# Postgres keeps fsync and synchronous_commit on by default here: the question is what a
# durable audit log adds in front of a durable database. Prints TPS (median over rounds) and
# each target's ratio to auditing off.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-16}
export PG_DURABLE=${PG_DURABLE:-1}

source bench/lib.sh

"$SLUICE" keys generate --out "$work/signing.pem" 2>/dev/null
echo "$PASSWORD" > "$work/upstream.password"
declare -A port=() pid=()
targets=(audit-off audit-write audit-fsync audit-fsync-fwd)
for t in "${targets[@]}"; do
    mkdir -p "$work/$t"
    port[$t]=$(free_port)
    case $t in
        audit-off) audit='enabled = false' ;;
        audit-write) audit='durability = "write"' ;;
        audit-fsync) audit='durability = "fsync"' ;;
        audit-fsync-fwd) audit='durability = "fsync-before-forward"' ;;
    esac
    cat > "$work/$t/sluice.toml" <<CONF
[server]
listen = "127.0.0.1:${port[$t]}"
data_dir = "./data"
[tls]
mode = "prefer"
[identity]
signing_key = "../signing.pem"
max_ttl = "2h"
[[upstream]]
database = "bench"
url = "postgres://bench@127.0.0.1:$PG_PORT/bench"
password_file = "../upstream.password"
tls = "disable"
[audit]
$audit
CONF
    RUST_LOG=warn "$SLUICE" serve --config "$work/$t/sluice.toml" 2>"$work/$t.log" &
    pids+=($!)
    pid[$t]=$!
    wait_port "${port[$t]}"
done
TOKEN=$("$SLUICE" token mint --config "$work/audit-off/sluice.toml" --subject bench --database bench --ttl 2h)

# run TARGET SCRIPT -> "tps ticks transactions": ticks is the gateway's CPU during the run
run() {
    local target=$1 script=$2 before out
    local args=(-n -h 127.0.0.1 -p "${port[$target]}" -U bench -c "$CLIENTS" -j 2 -T "$DURATION" -M simple)
    [ "$script" = select-only ] && args+=(-S)
    before=$(cpu_ticks "${pid[$target]}")
    out=$(PGPASSWORD=$TOKEN pgbench "${args[@]}" bench 2>/dev/null)
    echo "$(awk '/^tps/ {print $3}' <<<"$out") $(( $(cpu_ticks "${pid[$target]}") - before ))" \
        "$(awk '/actually processed/ {print $NF}' <<<"$out" | cut -d/ -f1)"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores; rounds=$ROUNDS duration=${DURATION}s scale=$SCALE clients=$CLIENTS; postgres fsync/synchronous_commit $([ "$PG_DURABLE" = 1 ] && echo on || echo off)"
echo "# ratio: median over rounds of the target's TPS over audit-off's TPS in the same round;"
echo "# gw_us_per_stmt: the gateway's CPU time (user + system) over every statement it relayed, all rounds"
printf "%-12s %-16s %12s %8s %12s %15s %12s\n" script target tps ratio ratio_range gw_us_per_stmt records
for script in tpcb-like select-only; do
    declare -A tps=() ratios=() ticks=() transactions=()
    # BEGIN, three UPDATEs, a SELECT, an INSERT, END.
    per_transaction=$([ "$script" = tpcb-like ] && echo 7 || echo 1)
    for round in $(seq 1 "$ROUNDS"); do
        n=${#targets[@]}
        declare -A this=()
        for i in $(seq 0 $((n - 1))); do
            t=${targets[$(( (i + round) % n ))]}
            read -r this[$t] used done < <(run "$t" "$script")
            tps[$t]+="${this[$t]} "
            ticks[$t]=$(( ${ticks[$t]:-0} + used ))
            transactions[$t]=$(( ${transactions[$t]:-0} + done ))
        done
        # Paired with this round's audit-off run: load from neighbours drifts between rounds.
        for t in "${targets[@]}"; do
            ratios[$t]+="$(awk -v a="${this[$t]}" -v b="${this[audit-off]}" 'BEGIN{print a/b}') "
        done
        unset this
    done
    for t in "${targets[@]}"; do
        m=$(tr ' ' '\n' <<<"${tps[$t]}" | grep . | median)
        r=$(tr ' ' '\n' <<<"${ratios[$t]}" | grep . | median)
        range=$(tr ' ' '\n' <<<"${ratios[$t]}" | grep . | range)
        records=$({ cat "$work/$t"/data/audit/audit.jsonl* 2>/dev/null || true; } | wc -l)
        per_statement=$(awk -v k="${ticks[$t]}" -v hz="$(getconf CLK_TCK)" \
            -v n="$(( ${transactions[$t]} * per_transaction ))" 'BEGIN{printf "%.1f", k / hz * 1e6 / n}')
        printf "%-12s %-16s %12.1f %8.3f %12s %15s %12s\n" "$script" "$t" "$m" "$r" "$range" \
            "$per_statement" "$records"
    done
    unset tps ratios ticks transactions
done
for t in audit-write audit-fsync audit-fsync-fwd; do
    # --config: every file of the chain, rotated ones included, and the key.
    if out=$("$SLUICE" audit verify --config "$work/$t/sluice.toml" 2>&1); then
        echo "# $t: audit verify ok"
    else
        echo "# $t: audit verify FAILED"
        grep -v '^note' <<<"$out" | sed 's/^/#   /'
    fi
done
