#!/usr/bin/env bash
# A `query` tool call through Sluice's MCP server against the same statement over psql's protocol
# through the same gateway, as users run it (TLS required of Postgres clients, audit on, the
# stock policy plugins and mask-pii-columns loaded), one session each, same run, interleaved
# rounds.
#
#   bench/mcp.sh                      # 3 rounds of 5 s
#   ROUNDS=5 DURATION=10 bench/mcp.sh
#
# psql    pgbench -M simple, one client, a script of the one statement: the simple-protocol
#         Query psql sends, over TLS, one session
# mcp     the official TypeScript SDK's client (integration-tests/mcp), one MCP session,
#         `query` with the same statement back to back (HTTP on loopback, as the MCP listener
#         serves it)
# Reported per target: statements (calls) per second, the ratio to psql's in the same round,
# the latency (psql: pgbench's average; mcp: the median call), and the gateway's CPU per
# statement (user + system, all rounds).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
SCALE=${SCALE:-1}
SQL="SELECT aid, abalance FROM pgbench_accounts WHERE aid = 42"

command -v node >/dev/null || { echo "node not found: apt-get install nodejs npm" >&2; exit 1; }
[ -d integration-tests/mcp/node_modules/@modelcontextprotocol/sdk ] ||
    (cd integration-tests/mcp && npm ci --no-audit --no-fund >/dev/null)

source bench/lib.sh

MCP_PORT=$(free_port)
stock_plugins "$work/plugins.d" "customers.email=hash"
SLUICE_EXTRA_TOML="[mcp]
listen = \"127.0.0.1:$MCP_PORT\"" start_sluice sluice require write "$work/plugins.d"
wait_port "$MCP_PORT"
echo "$SQL;" > "$work/one.sql"

echo "# $(date -u +%FT%TZ) $(nproc) cores; rounds=$ROUNDS duration=${DURATION}s; $("$bindir/postgres" --version); statement: $SQL"
printf "%-8s %10s %7s %11s %12s %16s\n" target per_second ratio ratio_range latency_ms cpu_us_per_stmt
declare -A rate=() ratios=() latency=() ticks=() count=()
for round in $(seq 1 "$ROUNDS"); do
    order=(psql mcp)
    (( round % 2 == 0 )) && order=(mcp psql)
    declare -A this=()
    for t in "${order[@]}"; do
        before=$(cpu_ticks "${pid[sluice]}")
        if [ "$t" = psql ]; then
            out=$(PGPASSWORD=$TOKEN PGSSLMODE=require pgbench -n -h 127.0.0.1 -p "${port[sluice]}" \
                -U bench -M simple -c 1 -T "$DURATION" -f "$work/one.sql" bench 2>&1)
            this[$t]=$(awk '/^tps/ {print $3}' <<<"$out")
            latency[$t]+="$(awk '/^latency average/ {print $4}' <<<"$out") "
            n=$(awk '/actually processed/ {print $NF}' <<<"$out" | cut -d/ -f1)
        else
            out=$(node --no-warnings integration-tests/mcp/bench_calls.mjs "http://127.0.0.1:$MCP_PORT/mcp" "$TOKEN" "$DURATION" "$SQL")
            this[$t]=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["per_second"])' <<<"$out")
            latency[$t]+="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["p50_ms"])' <<<"$out") "
            n=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["calls"] + 1)' <<<"$out")
        fi
        ticks[$t]=$(( ${ticks[$t]:-0} + $(cpu_ticks "${pid[sluice]}") - before ))
        count[$t]=$(( ${count[$t]:-0} + n ))
        rate[$t]+="${this[$t]} "
    done
    for t in psql mcp; do
        ratios[$t]+="$(awk -v a="${this[$t]}" -v b="${this[psql]}" 'BEGIN{print a/b}') "
    done
done
for t in psql mcp; do
    printf "%-8s %10.1f %7.3f %11s %12.3f %16.1f\n" "$t" \
        "$(tr ' ' '\n' <<<"${rate[$t]}" | grep . | median)" \
        "$(tr ' ' '\n' <<<"${ratios[$t]}" | grep . | median)" \
        "$(tr ' ' '\n' <<<"${ratios[$t]}" | grep . | range)" \
        "$(tr ' ' '\n' <<<"${latency[$t]}" | grep . | median)" \
        "$(awk -v k="${ticks[$t]}" -v hz="$(getconf CLK_TCK)" -v n="${count[$t]}" 'BEGIN{print k / hz * 1e6 / n}')"
done
