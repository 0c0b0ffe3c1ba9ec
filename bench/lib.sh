# Shared by the bench scripts: finds Postgres, builds Sluice (release), starts a throwaway
# Postgres with a pgbench database on loopback, and cleans everything up on exit.
# Inputs: SCALE; PG_DURABLE=1 keeps Postgres' fsync and synchronous_commit on; PIN=1 gives
# the proxies the last CPU and Postgres and pgbench the others (a gateway on cores of its own,
# as it runs beside a database host rather than on it).
# Outputs: bindir, SLUICE, work, as_pg, pids, PG_PORT, PASSWORD, free_port, wait_port, median,
# range, cpu_ticks, pg_ticks.

bindir=$(pg_config --bindir 2>/dev/null || true)
[ -x "$bindir/initdb" ] || bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
[ -x "$bindir/initdb" ] || { echo "initdb not found: apt-get install postgresql" >&2; exit 1; }
command -v pgbench >/dev/null || { echo "pgbench not found: apt-get install postgresql-contrib" >&2; exit 1; }

cargo build --release -q -p sluice
SLUICE=$PWD/target/release/sluice

# The gateways' files (plugin directories among them) are the invoking user's; Postgres and
# PgBouncer, which refuse to run as root, get directories of their own under it. (A gateway
# refuses a plugin directory below a directory another user owns.)
work=$(mktemp -d /tmp/sluice-bench-XXXXXX)
chmod 755 "$work"
mkdir -p "$work/pg"
as_pg=()
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$work/pg"
    as_pg=(runuser -u postgres --)
fi
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# The median, and the "lowest-highest", of the numbers on standard input.
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
range() { sort -g | awk 'NR==1{lo=$1} {hi=$1} END{printf "%.2f-%.2f", lo, hi}'; }
# CPU time (user + system, clock ticks) process $1 has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# CPU time (clock ticks) Postgres has used so far: the postmaster's own, its live children's
# (backends, background processes) and that of the children it has reaped (backends of closed
# sessions). What a proxy in front makes the database spend shows here.
pg_ticks() {
    local pm child total
    pm=$(head -n1 "$work/pg/data/postmaster.pid")
    total=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat")
    for child in $(pgrep -P "$pm"); do
        total=$((total + $(cpu_ticks "$child" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
# pg_ticks_settled: pg_ticks once the backends of the sessions just ended have been reaped
# (the postmaster adds an exited child's time to its own count only then): the count stops
# moving, or two seconds pass.
pg_ticks_settled() {
    local last now
    last=$(pg_ticks)
    for _ in $(seq 1 20); do
        sleep 0.1
        now=$(pg_ticks)
        [ "$now" = "$last" ] && break
        last=$now
    done
    echo "$last"
}
# wait_port PORT [TRIES]: tries every 50 ms, 200 times unless told.
wait_port() {
    for _ in $(seq 1 "${2:-200}"); do
        (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2; return 1
}

PG_PORT=$(free_port)
PASSWORD=bench-$RANDOM$RANDOM

echo "$PASSWORD" > "$work/pg/pwfile"; chmod 644 "$work/pg/pwfile"
"${as_pg[@]}" "$bindir/initdb" -D "$work/pg/data" -U postgres -A scram-sha-256 --pwfile="$work/pg/pwfile" \
    -E UTF8 --locale=C --no-sync >/dev/null
cat >> "$work/pg/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = ''
max_connections = 200
shared_buffers = 256MB
CONF
if [ "${PG_DURABLE:-0}" != 1 ]; then
    printf 'fsync = off\nsynchronous_commit = off\n' >> "$work/pg/data/postgresql.conf"
fi
# PIN=1: what each side may run on. Started under taskset, a gateway sizes its workers to its
# CPUs; Postgres' backends inherit the postmaster's.
pin_proxy=() pin_clients=()
if [ "${PIN:-0}" = 1 ]; then
    cpus=$(nproc)
    [ "$cpus" -ge 2 ] || { echo "PIN=1 needs at least two CPUs" >&2; exit 1; }
    command -v taskset >/dev/null || { echo "taskset not found: apt-get install util-linux" >&2; exit 1; }
    pin_proxy=(taskset -c "$((cpus - 1))")
    pin_clients=(taskset -c "0-$((cpus - 2))")
fi
"${as_pg[@]}" "${pin_clients[@]}" "$bindir/postgres" -D "$work/pg/data" >"$work/pg/postgres.log" 2>&1 &
pids+=($!)
wait_port "$PG_PORT"

export PGHOST=127.0.0.1 PGSSLMODE=disable
PGPASSWORD=$PASSWORD psql -qX -p "$PG_PORT" -U postgres -d postgres \
    -c "CREATE ROLE bench LOGIN PASSWORD '$PASSWORD'" -c "CREATE DATABASE bench OWNER bench" >/dev/null
PGPASSWORD=$PASSWORD pgbench -q -i -s "$SCALE" -p "$PG_PORT" -U bench bench 2>/dev/null


# Targets: each script fills targets=(...) and, per target, port, pass (password or token),
# sslmode (what pgbench asks for) and pid (whose CPU is measured; none for direct Postgres).
declare -A port=() pass=() sslmode=() pid=()
port[direct]=$PG_PORT; pass[direct]=$PASSWORD; sslmode[direct]=disable
"$SLUICE" keys generate --out "$work/signing.pem" 2>/dev/null
echo "$PASSWORD" > "$work/upstream.password"

# start_sluice NAME CLIENT_TLS AUDIT [PLUGIN_DIR]: a gateway in $work/NAME on a port of its own,
# all sharing one signing key (so one token serves them all). CLIENT_TLS: require (clients must
# use TLS, the default users run) or prefer (pgbench connects in cleartext); AUDIT: off, or a
# durability (write, fsync, fsync-before-forward). The upstream leg is plain TCP on loopback,
# as PgBouncer's is. SLUICE_EXTRA_TOML is appended to its configuration; SLUICE_WRAP (a command
# prefix, such as valgrind's) runs the gateway under it.
start_sluice() {
    local name=$1 tls=$2 audit=$3 plugins=${4:-}
    mkdir -p "$work/$name"
    port[$name]=$(free_port)
    local audit_toml="durability = \"$audit\""
    [ "$audit" = off ] && audit_toml="enabled = false"
    cat > "$work/$name/sluice.toml" <<CONF
[server]
listen = "127.0.0.1:${port[$name]}"
data_dir = "./data"
${WORKERS:+workers = $WORKERS}
[tls]
mode = "$tls"
[identity]
signing_key = "../signing.pem"
max_ttl = "2h"
[[upstream]]
database = "bench"
url = "postgres://bench@127.0.0.1:$PG_PORT/bench"
password_file = "../upstream.password"
tls = "disable"
[audit]
$audit_toml
${plugins:+[plugins]
dir = \"$plugins\"}
${SLUICE_EXTRA_TOML:-}
CONF
    local wrap=()
    read -r -a wrap <<<"${SLUICE_WRAP:-}"
    RUST_LOG=warn "${pin_proxy[@]}" "${wrap[@]}" "$SLUICE" serve --config "$work/$name/sluice.toml" 2>"$work/$name.log" &
    pids+=($!)
    pid[$name]=$!
    wait_port "${port[$name]}" $(( ${#wrap[@]} ? 6000 : 200 ))
    [ -n "${TOKEN:-}" ] ||
        TOKEN=$("$SLUICE" token mint --config "$work/$name/sluice.toml" --subject bench --database bench --ttl 2h)
    pass[$name]=$TOKEN
    sslmode[$name]=$([ "$tls" = require ] && echo require || echo disable)
}

# stock_plugins DIR MASK_RULES: the stock policy plugins (approve-writes aside: it holds every
# write) and mask-pii-columns with MASK_RULES, as a plugin directory. read-only applies to
# tokens in group "readers" only, which the bench token is not.
stock_plugins() {
    local dir=$1 rules=$2
    [ -d "$work/all-plugins" ] || cargo xtask plugins --out "$work/all-plugins" >/dev/null
    mkdir -p "$dir"
    for p in no-ddl safe-writes guard-functions guard-roles read-only mask-pii-columns; do
        cp "$work/all-plugins/$p.wasm" "$dir/"
    done
    printf '[config]\ngroups = "readers"\n' > "$dir/read-only.toml"
    printf '[config]\nrules = "%s"\n' "$rules" > "$dir/mask-pii-columns.toml"
}

# start_pgbouncer NAME: PgBouncer in session mode with TLS required of its clients (the
# certificate of the first gateway started, so both present the same key type) and plain TCP
# to Postgres. Fails, saying so, if PgBouncer is not installed.
start_pgbouncer() {
    local name=$1 cert_dir
    command -v pgbouncer >/dev/null || {
        echo "pgbouncer not installed (apt-get install pgbouncer): no PgBouncer target" >&2
        return 1
    }
    # Called in an `if`, where errexit is off: every step that can fail stops the script itself.
    cert_dir=$(dirname "$(ls "$work"/*/data/server.crt | head -n1)")
    mkdir -p "$work/$name"
    cp "$cert_dir/server.crt" "$cert_dir/server.key" "$work/$name/" || exit 1
    port[$name]=$(free_port)
    cat > "$work/$name/pgbouncer.ini" <<CONF
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port[$name]}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $work/$name/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 50
logfile = $work/$name/pgbouncer.log
pidfile = $work/$name/pgbouncer.pid
client_tls_sslmode = require
client_tls_cert_file = $work/$name/server.crt
client_tls_key_file = $work/$name/server.key
CONF
    echo "\"bench\" \"$PASSWORD\"" > "$work/$name/userlist.txt"
    [ "$(id -u)" = 0 ] && chown -R postgres: "$work/$name"
    "${as_pg[@]}" "${pin_proxy[@]}" pgbouncer "$work/$name/pgbouncer.ini" >/dev/null 2>&1 &
    pids+=($!)
    wait_port "${port[$name]}" || { tail -n 5 "$work/$name/pgbouncer.log" >&2; exit 1; }
    pid[$name]=$(cat "$work/$name/pgbouncer.pid") || exit 1
    pass[$name]=$PASSWORD
    sslmode[$name]=require
}

# measure LABEL PGBENCH_ARGS...: pgbench against every target in $targets, ROUNDS interleaved
# rounds of DURATION seconds (the order rotates each round, so no target always runs first).
# Prints a row per target: median TPS; the median and range of its per-round ratio to
# $BASELINE's TPS in the same round (neighbours' load on a shared machine drifts between
# rounds, not within one); and the CPU (user + system) its process spent per statement over all
# rounds, STATEMENTS_PER_TX statements a transaction. A run that does not finish in time is a
# stall and stops the script.
measure() {
    local label=$1 round i t out before pg_before processed
    shift
    local n=${#targets[@]} baseline=${BASELINE:-direct}
    local -A tps=() ratios=() ticks=() pg=() statements=() this=()
    for round in $(seq 1 "$ROUNDS"); do
        this=()
        for i in $(seq 0 $((n - 1))); do
            t=${targets[$(( (i + round) % n ))]}
            before=0
            [ -n "${pid[$t]:-}" ] && before=$(cpu_ticks "${pid[$t]}")
            pg_before=$(pg_ticks_settled)
            out=$(PGPASSWORD=${pass[$t]} PGSSLMODE=${sslmode[$t]} timeout $((DURATION * 3 + 60)) \
                "${pin_clients[@]}" pgbench -n -h 127.0.0.1 -p "${port[$t]}" -U bench -T "$DURATION" "$@" bench 2>&1) || {
                echo "pgbench $* against $t failed or stalled:" >&2
                tail -n 5 <<<"$out" >&2
                exit 1
            }
            this[$t]=$(awk '/^tps/ {print $3}' <<<"$out")
            tps[$t]+="${this[$t]} "
            [ -n "${pid[$t]:-}" ] && ticks[$t]=$(( ${ticks[$t]:-0} + $(cpu_ticks "${pid[$t]}") - before ))
            pg[$t]=$(( ${pg[$t]:-0} + $(pg_ticks_settled) - pg_before ))
            processed=$(awk '/actually processed/ {print $NF}' <<<"$out" | cut -d/ -f1)
            statements[$t]=$(( ${statements[$t]:-0} + processed * ${STATEMENTS_PER_TX:-1} ))
        done
        for t in "${targets[@]}"; do
            ratios[$t]+="$(awk -v a="${this[$t]}" -v b="${this[$baseline]}" 'BEGIN{print a/b}') "
        done
    done
    for t in "${targets[@]}"; do
        printf "%-26s %-15s %10.1f %7.3f %11s %15s %14s\n" "$label" "$t" \
            "$(tr ' ' '\n' <<<"${tps[$t]}" | grep . | median)" \
            "$(tr ' ' '\n' <<<"${ratios[$t]}" | grep . | median)" \
            "$(tr ' ' '\n' <<<"${ratios[$t]}" | grep . | range)" \
            "$(per_statement "${ticks[$t]:-0}" "${statements[$t]}")" \
            "$(per_statement "${pg[$t]}" "${statements[$t]}")"
    done
}

# per_statement TICKS STATEMENTS: microseconds of CPU per statement ("-" for none).
per_statement() {
    awk -v k="$1" -v hz="$(getconf CLK_TCK)" -v n="$2" \
        'BEGIN{print (k > 0) ? sprintf("%.1f", k / hz * 1e6 / n) : "-"}'
}

# The header of measure's rows.
measure_header() {
    echo "# ratio: median over rounds of the target's TPS over ${BASELINE:-direct}'s TPS in the same round, with its range;"
    echo "# cpu_us_per_stmt: the target process's CPU time (user + system) per statement, all rounds;"
    echo "# pg_us_per_stmt: Postgres' CPU time (all its processes) per statement behind that target"
    printf "%-26s %-15s %10s %7s %11s %15s %14s\n" scenario target tps ratio ratio_range cpu_us_per_stmt pg_us_per_stmt
}
