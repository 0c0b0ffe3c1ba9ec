#!/usr/bin/env bash
# The io_uring spike (issue 22): pgbench through the same byte relay on io_uring and on epoll
# (monoio's two drivers, one code path), on tokio (Sluice's runtime), and through Sluice with
# everything off (plain TCP, audit off, no plugins), against direct Postgres, same run,
# interleaved rounds. The relays parse nothing: the difference between their rows is the I/O
# mechanism's; the difference to Sluice's is what Sluice does besides moving bytes.
#
#   bench/spikes/uring-relay/run.sh
#   ROUNDS=5 DURATION=10 bench/spikes/uring-relay/run.sh
set -euo pipefail
spike=$(cd "$(dirname "$0")" && pwd)
cd "$spike/../../.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
SCALE=${SCALE:-10}

(cd "$spike" && cargo build --release -q)
RELAY=$spike/target/release/uring-relay

source bench/lib.sh

for mode in uring epoll tokio; do
    port[$mode]=$(free_port)
    "$RELAY" "$mode" "127.0.0.1:${port[$mode]}" "127.0.0.1:$PG_PORT" 2>"$work/$mode.log" &
    pids+=($!)
    pid[$mode]=$!
    wait_port "${port[$mode]}"
    pass[$mode]=$PASSWORD
    sslmode[$mode]=disable
done
start_sluice sluice-plain prefer off
targets=(direct uring epoll tokio sluice-plain)

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r); rounds=$ROUNDS duration=${DURATION}s scale=$SCALE"
measure_header
measure "select-only simple c=1" -c 1 -M simple -S
measure "select-only simple c=16" -c 16 -j 2 -M simple -S
measure "select-only prepared c=16" -c 16 -j 2 -M prepared -S
