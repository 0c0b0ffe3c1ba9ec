#!/usr/bin/env bash
# Direct Postgres vs Sluice (without and with the stock policy plugins) vs PgBouncer (session
# mode), same machine, same run, interleaved.
#
#   bench/run.sh                      # defaults: 3 rounds of 5 s per scenario and target
#   ROUNDS=5 DURATION=10 bench/run.sh
#   ONLY="simple 16" bench/run.sh     # one scenario
#   WORKERS=1 bench/run.sh            # Sluice's [server] workers (default: one per core)
#
# Every leg is plain TCP on loopback (no TLS anywhere) so the three targets do the same work
# apart from what they are. Prints TPS and mean latency (median over rounds) and the ratio of
# each target's TPS to direct Postgres.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
SCALE=${SCALE:-10}

source bench/lib.sh
SLUICE_PORT=$(free_port); BOUNCER_PORT=$(free_port); PLUGGED_PORT=$(free_port)
PGBOUNCER=$(command -v pgbouncer || true)
[ -n "$PGBOUNCER" ] || echo "pgbouncer not installed (apt-get install pgbouncer): comparing direct and sluice only" >&2

# Sluice: plain TCP on both legs for a like-for-like comparison.
mkdir -p "$work/sluice" "$work/plugged"
"$SLUICE" keys generate --out "$work/sluice/signing.pem" 2>/dev/null
echo "$PASSWORD" > "$work/sluice/upstream.password"
cat > "$work/sluice/sluice.toml" <<CONF
[server]
listen = "127.0.0.1:$SLUICE_PORT"
data_dir = "./data"
${WORKERS:+workers = $WORKERS}
[tls]
mode = "prefer"
[identity]
signing_key = "./signing.pem"
max_ttl = "2h"
[[upstream]]
database = "bench"
url = "postgres://bench@127.0.0.1:$PG_PORT/bench"
password_file = "./upstream.password"
tls = "disable"
[audit]
enabled = ${AUDIT:-false}
CONF
RUST_LOG=warn "$SLUICE" serve --config "$work/sluice/sluice.toml" 2>"$work/sluice.log" &
pids+=($!)
wait_port "$SLUICE_PORT"
TOKEN=$("$SLUICE" token mint --config "$work/sluice/sluice.toml" --subject bench --database bench --ttl 2h)

# The same gateway with the stock policy plugins loaded (approve-writes aside: it would hold
# every write; masking has bench/masking.sh), same key so the same token works.
cargo xtask plugins --out "$work/plugged/plugins.d" >/dev/null
rm -f "$work/plugged/plugins.d/"{approve-writes,test-faults,test-route-faults,test-mask-faults,deny-tables-py,mask-pii-columns,pii-scan}.wasm
printf '[config]\ngroups = "readers"\n' > "$work/plugged/plugins.d/read-only.toml"
cp "$work/sluice/signing.pem" "$work/sluice/upstream.password" "$work/plugged/"
sed -e "s/127.0.0.1:$SLUICE_PORT/127.0.0.1:$PLUGGED_PORT/" "$work/sluice/sluice.toml" > "$work/plugged/sluice.toml"
printf '[plugins]\ndir = "./plugins.d"\n' >> "$work/plugged/sluice.toml"
RUST_LOG=warn "$SLUICE" serve --config "$work/plugged/sluice.toml" 2>"$work/plugged.log" &
pids+=($!)
wait_port "$PLUGGED_PORT"

targets=(direct sluice sluice+plugins)
if [ -n "$PGBOUNCER" ]; then
    mkdir -p "$work/bouncer"
    cat > "$work/bouncer/pgbouncer.ini" <<CONF
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $work/bouncer/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 50
logfile = $work/bouncer/pgbouncer.log
CONF
    echo "\"bench\" \"$PASSWORD\"" > "$work/bouncer/userlist.txt"
    [ "$(id -u)" = 0 ] && chown -R postgres: "$work/bouncer"
    "${as_pg[@]}" "$PGBOUNCER" "$work/bouncer/pgbouncer.ini" >/dev/null 2>&1 &
    pids+=($!)
    wait_port "$BOUNCER_PORT"
    targets+=(pgbouncer)
fi

cat > "$work/large.sql" <<'SQL'
SELECT aid, bid, abalance, filler FROM pgbench_accounts WHERE aid <= 10000;
SQL

# run TARGET MODE CLIENTS SCRIPT -> "tps latency_ms"
run() {
    local target=$1 mode=$2 clients=$3 script=$4 port user pass
    case $target in
        direct) port=$PG_PORT; user=bench; pass=$PASSWORD ;;
        sluice) port=$SLUICE_PORT; user=bench; pass=$TOKEN ;;
        sluice+plugins) port=$PLUGGED_PORT; user=bench; pass=$TOKEN ;;
        pgbouncer) port=$BOUNCER_PORT; user=bench; pass=$PASSWORD ;;
    esac
    local jobs=$(( clients > 1 ? 2 : 1 ))
    local args=(-n -p "$port" -U "$user" -c "$clients" -j "$jobs" -T "$DURATION" -M "$mode")
    if [ "$script" = select-only ]; then args+=(-S); else args+=(-f "$work/large.sql"); fi
    PGPASSWORD=$pass pgbench "${args[@]}" bench 2>/dev/null |
        awk '/^latency average/ {lat=$4} /^tps/ {tps=$3} END {printf "%s %s\n", tps, lat}'
}


scenarios=(
    "select-only simple 1" "select-only simple 16"
    "select-only extended 1" "select-only extended 16"
    "select-only prepared 1" "select-only prepared 16"
    "large-10k-rows extended 1" "large-10k-rows extended 16"
)
# ONLY=pattern runs the scenarios whose description contains it (e.g. ONLY="simple 16").
if [ -n "${ONLY:-}" ]; then
    kept=()
    for scenario in "${scenarios[@]}"; do [[ "$scenario" == *"$ONLY"* ]] && kept+=("$scenario"); done
    scenarios=("${kept[@]}")
fi
echo "# $(date -u +%FT%TZ) $(nproc) cores; rounds=$ROUNDS duration=${DURATION}s scale=$SCALE; $("$bindir/postgres" --version)"
printf "%-16s %-9s %3s  %-14s %12s %12s %8s %14s\n" script mode c target tps latency_ms ratio added_lat_ms
for scenario in "${scenarios[@]}"; do
    read -r script mode clients <<<"$scenario"
    declare -A tps=() lat=()
    for round in $(seq 1 "$ROUNDS"); do
        # Rotate the order each round so no target always runs first (or last) on a warm cache.
        n=${#targets[@]}
        for i in $(seq 0 $((n - 1))); do
            t=${targets[$(( (i + round) % n ))]}
            read -r r_tps r_lat < <(run "$t" "$mode" "$clients" "$script")
            tps[$t]+="$r_tps "; lat[$t]+="$r_lat "
        done
    done
    direct_tps=$(tr ' ' '\n' <<<"${tps[direct]}" | grep . | median)
    direct_lat=$(tr ' ' '\n' <<<"${lat[direct]}" | grep . | median)
    for t in "${targets[@]}"; do
        m_tps=$(tr ' ' '\n' <<<"${tps[$t]}" | grep . | median)
        m_lat=$(tr ' ' '\n' <<<"${lat[$t]}" | grep . | median)
        printf "%-16s %-9s %3s  %-14s %12.1f %12.3f %8.3f %14.3f\n" "$script" "$mode" "$clients" "$t" \
            "$m_tps" "$m_lat" "$(awk -v a="$m_tps" -v b="$direct_tps" 'BEGIN{print a/b}')" \
            "$(awk -v a="$m_lat" -v b="$direct_lat" 'BEGIN{print a-b}')"
    done
    unset tps lat
done
