#!/usr/bin/env bash
# Sluice as users run it against PgBouncer given the same TLS, on pgbench's select-only
# statements, its TPC-B-like transaction, a 10,000-row result and a new connection per
# transaction (`pgbench -C`, how agents often use a database: `psql -c` per step), same
# machine, same run, interleaved rounds.
#
#   bench/run.sh                      # 3 rounds of 5 s per scenario and target
#   ROUNDS=5 DURATION=10 bench/run.sh
#   ONLY="c=16" bench/run.sh          # the scenarios whose label contains it
#   WORKERS=1 bench/run.sh            # Sluice's [server] workers (default: one per core)
#   PIN=1 bench/run.sh                # the proxies on a CPU of their own, Postgres and pgbench
#                                     # on the others
#
# Targets:
#   direct        Postgres itself, plain TCP: the baseline of every ratio
#   sluice        as users run it: TLS required of clients, audit on (durability "write"), the
#                 stock policy plugins and mask-pii-columns loaded (rules for a table pgbench
#                 does not have: the masking machinery runs, nothing is masked)
#   pgbouncer     session mode, TLS required of clients (client_tls_sslmode = require)
#   sluice-plain  plain TCP, audit off, no plugins: the floor, for comparison only
# Both proxies reach Postgres over plain TCP on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
SCALE=${SCALE:-10}

source bench/lib.sh

stock_plugins "$work/plugins.d" "customers.email=hash, customers.card=partial(0,4)"
start_sluice sluice require write "$work/plugins.d"
start_sluice sluice-plain prefer off
targets=(direct sluice)
if start_pgbouncer pgbouncer; then targets+=(pgbouncer); fi
targets+=(sluice-plain)

cat > "$work/large.sql" <<'SQL'
SELECT aid, bid, abalance, filler FROM pgbench_accounts WHERE aid <= 10000;
SQL

scenarios=(
    "select-only simple 1" "select-only simple 16"
    "select-only extended 1" "select-only extended 16"
    "select-only prepared 1" "select-only prepared 16"
    "tpcb-like simple 16"
    "large-10k-rows extended 1" "large-10k-rows extended 16"
    "connect-per-tx simple 1" "connect-per-tx simple 16"
)
echo "# $(date -u +%FT%TZ) $(nproc) cores$([ "${PIN:-0}" = 1 ] && echo ", proxies pinned to the last"); rounds=$ROUNDS duration=${DURATION}s scale=$SCALE; $("$bindir/postgres" --version); $(pgbouncer --version 2>/dev/null | head -n1)"
measure_header
for scenario in "${scenarios[@]}"; do
    read -r script mode clients <<<"$scenario"
    label="$script $mode c=$clients"
    [[ "$label" == *"${ONLY:-}"* ]] || continue
    args=(-c "$clients" -j $(( clients > 1 ? 2 : 1 )) -M "$mode")
    per_tx=1
    case "$script" in
        select-only) args+=(-S) ;;
        # BEGIN, three UPDATEs, a SELECT, an INSERT, END.
        tpcb-like) per_tx=7 ;;
        large-10k-rows) args+=(-f "$work/large.sql") ;;
        # A new connection (TLS where the target asks for it, login, upstream session) for each
        # select-only transaction.
        connect-per-tx) args+=(-S -C) ;;
    esac
    STATEMENTS_PER_TX=$per_tx measure "$label" "${args[@]}"
done
