# Shared by the bench scripts: finds Postgres, builds Sluice (release), starts a throwaway
# Postgres with a pgbench database on loopback, and cleans everything up on exit.
# Inputs: SCALE; PG_DURABLE=1 keeps Postgres' fsync and synchronous_commit on.
# Outputs: bindir, SLUICE, work, as_pg, pids, PG_PORT, PASSWORD, free_port, wait_port, median,
# range, cpu_ticks.

bindir=$(pg_config --bindir 2>/dev/null || true)
[ -x "$bindir/initdb" ] || bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
[ -x "$bindir/initdb" ] || { echo "initdb not found: apt-get install postgresql" >&2; exit 1; }
command -v pgbench >/dev/null || { echo "pgbench not found: apt-get install postgresql-contrib" >&2; exit 1; }

cargo build --release -q -p sluice
SLUICE=$PWD/target/release/sluice

work=$(mktemp -d /tmp/sluice-bench-XXXXXX)
as_pg=()
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$work"
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
wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2; return 1
}

PG_PORT=$(free_port)
PASSWORD=bench-$RANDOM$RANDOM

echo "$PASSWORD" > "$work/pwfile"; chmod 644 "$work/pwfile"
"${as_pg[@]}" "$bindir/initdb" -D "$work/data" -U postgres -A scram-sha-256 --pwfile="$work/pwfile" \
    -E UTF8 --locale=C --no-sync >/dev/null
cat >> "$work/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = ''
max_connections = 200
shared_buffers = 256MB
CONF
if [ "${PG_DURABLE:-0}" != 1 ]; then
    printf 'fsync = off\nsynchronous_commit = off\n' >> "$work/data/postgresql.conf"
fi
"${as_pg[@]}" "$bindir/postgres" -D "$work/data" >"$work/postgres.log" 2>&1 &
pids+=($!)
wait_port "$PG_PORT"

export PGHOST=127.0.0.1 PGSSLMODE=disable
PGPASSWORD=$PASSWORD psql -qX -p "$PG_PORT" -U postgres -d postgres \
    -c "CREATE ROLE bench LOGIN PASSWORD '$PASSWORD'" -c "CREATE DATABASE bench OWNER bench" >/dev/null
PGPASSWORD=$PASSWORD pgbench -q -i -s "$SCALE" -p "$PG_PORT" -U bench bench 2>/dev/null

