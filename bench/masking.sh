#!/usr/bin/env bash
# Masking's cost on large results: a 10,000-row result (pgbench_accounts) with two masked
# columns (filler hashed, abalance partial), same run, interleaved rounds. Rows/s ratios equal
# the TPS ratios (every transaction returns the same 10,000 rows).
#
#   bench/masking.sh                  # 3 rounds of 5 s per scenario and target
#   ROUNDS=5 DURATION=10 bench/masking.sh
#
# Targets:
#   direct          Postgres itself, plain TCP: the baseline of every ratio
#   sluice+masking  as users run it (TLS required of clients, audit "write", the stock policy
#                   plugins) with mask-pii-columns masking the two columns
#   sluice          the same, with masking rules for a table pgbench does not have
#   pgbouncer       session mode, TLS required of clients
#   sluice-plain    plain TCP, audit off, no plugins: the floor, for comparison only
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
SCALE=${SCALE:-1}

source bench/lib.sh

stock_plugins "$work/masking.d" "pgbench_accounts.filler=hash, pgbench_accounts.abalance=partial(0,1)"
stock_plugins "$work/plugins.d" "customers.email=hash, customers.card=partial(0,4)"
start_sluice sluice+masking require write "$work/masking.d"
start_sluice sluice require write "$work/plugins.d"
start_sluice sluice-plain prefer off
targets=(direct sluice+masking sluice)
if start_pgbouncer pgbouncer; then targets+=(pgbouncer); fi
targets+=(sluice-plain)

# The masking gateway really masks: a hash where filler was.
PGPASSWORD=$TOKEN PGSSLMODE=require psql -qXAt -h 127.0.0.1 -p "${port[sluice+masking]}" -U bench -d bench \
    -c "SELECT filler, abalance FROM pgbench_accounts WHERE aid = 1" | grep -q '^h:' ||
    { echo "the masking gateway did not mask" >&2; exit 1; }

cat > "$work/large.sql" <<'SQL'
SELECT aid, bid, abalance, filler FROM pgbench_accounts WHERE aid <= 10000;
SQL

echo "# $(date -u +%FT%TZ) $(nproc) cores; rounds=$ROUNDS duration=${DURATION}s; $("$bindir/postgres" --version); $(pgbouncer --version 2>/dev/null | head -n1)"
echo "# rows/s = tps x 10,000; cpu_us_per_stmt / 10,000 = the target's CPU per row relayed"
measure_header
for scenario in "simple 1" "extended 1" "simple 16" "extended 16"; do
    read -r mode clients <<<"$scenario"
    measure "10k-rows $mode c=$clients" -c "$clients" -j $(( clients > 1 ? 2 : 1 )) -M "$mode" \
        -f "$work/large.sql"
done
