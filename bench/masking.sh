#!/usr/bin/env bash
# Masking's cost on large results: a 10,000-row result (pgbench_accounts) with two masked
# columns (filler hashed, abalance partial), direct Postgres vs Sluice without plugins vs Sluice
# with mask-pii-columns, same run, interleaved rounds. Rows/s ratios equal the TPS ratios (every
# transaction returns the same 10,000 rows); each ratio is the median of per-round ratios, each
# round paired with its own direct run, with their range.
#
#   bench/masking.sh                  # 3 rounds of 5 s per scenario and target
#   ROUNDS=5 DURATION=10 bench/masking.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
SCALE=${SCALE:-1}

source bench/lib.sh
SLUICE_PORT=$(free_port); MASKED_PORT=$(free_port)

mkdir -p "$work/sluice" "$work/masked/plugins.d"
"$SLUICE" keys generate --out "$work/sluice/signing.pem" 2>/dev/null
echo "$PASSWORD" > "$work/sluice/upstream.password"
cat > "$work/sluice/sluice.toml" <<CONF
[server]
listen = "127.0.0.1:$SLUICE_PORT"
data_dir = "./data"
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
enabled = false
CONF
RUST_LOG=warn "$SLUICE" serve --config "$work/sluice/sluice.toml" 2>"$work/sluice.log" &
pids+=($!)
SLUICE_PID=$!
wait_port "$SLUICE_PORT"
TOKEN=$("$SLUICE" token mint --config "$work/sluice/sluice.toml" --subject bench --database bench --ttl 2h)

cargo xtask plugins --out "$work/all-plugins" >/dev/null
cp "$work/all-plugins/mask-pii-columns.wasm" "$work/masked/plugins.d/"
printf '[config]\nrules = "pgbench_accounts.filler=hash, pgbench_accounts.abalance=partial(0,1)"\n' \
    > "$work/masked/plugins.d/mask-pii-columns.toml"
cp "$work/sluice/signing.pem" "$work/sluice/upstream.password" "$work/masked/"
sed -e "s/127.0.0.1:$SLUICE_PORT/127.0.0.1:$MASKED_PORT/" "$work/sluice/sluice.toml" > "$work/masked/sluice.toml"
printf '[plugins]\ndir = "./plugins.d"\n' >> "$work/masked/sluice.toml"
RUST_LOG=warn "$SLUICE" serve --config "$work/masked/sluice.toml" 2>"$work/masked.log" &
pids+=($!)
MASKED_PID=$!
wait_port "$MASKED_PORT"

# The masked gateway really masks: a hash where filler was.
PGPASSWORD=$TOKEN psql -qXAt -p "$MASKED_PORT" -U bench -d bench \
    -c "SELECT filler, abalance FROM pgbench_accounts WHERE aid = 1" | grep -q '^h:' ||
    { echo "the masking gateway did not mask" >&2; exit 1; }

cat > "$work/large.sql" <<'SQL'
SELECT aid, bid, abalance, filler FROM pgbench_accounts WHERE aid <= 10000;
SQL

targets=(direct sluice sluice+masking)
# run TARGET MODE CLIENTS -> "tps ticks": ticks is the gateway's CPU during the run (0 direct)
run() {
    local target=$1 mode=$2 clients=$3 port pass pid=
    case $target in
        direct) port=$PG_PORT; pass=$PASSWORD ;;
        sluice) port=$SLUICE_PORT; pass=$TOKEN; pid=$SLUICE_PID ;;
        sluice+masking) port=$MASKED_PORT; pass=$TOKEN; pid=$MASKED_PID ;;
    esac
    local jobs=$(( clients > 1 ? 2 : 1 )) before=0 tps
    [ -n "$pid" ] && before=$(cpu_ticks "$pid")
    tps=$(PGPASSWORD=$pass pgbench -n -p "$port" -U bench -c "$clients" -j "$jobs" -T "$DURATION" \
        -M "$mode" -f "$work/large.sql" bench 2>/dev/null | awk '/^tps/ {print $3}')
    echo "$tps $(( ${pid:+$(cpu_ticks "$pid")} - before ))"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores; rounds=$ROUNDS duration=${DURATION}s; $("$bindir/postgres" --version)"
echo "# ratio: median over rounds of the target's TPS over direct's TPS in the same round;"
echo "# gw_ns_per_row: the gateway's CPU time (user + system) over every row it relayed, all rounds"
printf "%-9s %3s  %-15s %12s %12s %8s %12s %14s\n" mode c target tps rows_per_s ratio ratio_range gw_ns_per_row
for scenario in "simple 1" "extended 1" "simple 16" "extended 16"; do
    read -r mode clients <<<"$scenario"
    declare -A tps=() ratios=() ticks=() txs=()
    for round in $(seq 1 "$ROUNDS"); do
        n=${#targets[@]}
        declare -A this=()
        for i in $(seq 0 $((n - 1))); do
            t=${targets[$(( (i + round) % n ))]}
            read -r this[$t] used < <(run "$t" "$mode" "$clients")
            tps[$t]+="${this[$t]} "
            ticks[$t]=$(( ${ticks[$t]:-0} + used ))
            txs[$t]=$(awk -v a="${txs[$t]:-0}" -v t="${this[$t]}" -v d="$DURATION" 'BEGIN{print a + t*d}')
        done
        # Paired with this round's direct run: neighbours' load on a shared machine drifts
        # between rounds, not within one.
        for t in "${targets[@]}"; do
            ratios[$t]+="$(awk -v a="${this[$t]}" -v b="${this[direct]}" 'BEGIN{print a/b}') "
        done
        unset this
    done
    for t in "${targets[@]}"; do
        m=$(tr ' ' '\n' <<<"${tps[$t]}" | grep . | median)
        r=$(tr ' ' '\n' <<<"${ratios[$t]}" | grep . | median)
        range=$(tr ' ' '\n' <<<"${ratios[$t]}" | grep . | range)
        per_row=$(awk -v k="${ticks[$t]}" -v hz="$(getconf CLK_TCK)" -v n="${txs[$t]}" \
            'BEGIN{print (k > 0) ? sprintf("%.0f", k / hz * 1e9 / (n * 10000)) : "-"}')
        printf "%-9s %3s  %-15s %12.1f %12.0f %8.3f %12s %14s\n" "$mode" "$clients" "$t" "$m" \
            "$(awk -v a="$m" 'BEGIN{print a*10000}')" "$r" "$range" "$per_row"
    done
    unset tps ratios ticks txs
done
