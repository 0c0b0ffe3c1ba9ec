#!/usr/bin/env bash
# Two builds of the gateway against each other in one run, as users run it (TLS, audit
# "write", the stock plugins) and plain (TCP, audit off, no plugins), rounds interleaved with
# Postgres itself as the baseline: what a change did to speed, without the drift between runs.
#
#   bench/ab.sh BEFORE_BINARY AFTER_BINARY
#   ROUNDS=5 DURATION=5 ONLY="c=16" bench/ab.sh /tmp/sluice-before target/release/sluice
#
# Build the "before" binary from a worktree of the older commit (`git worktree add`), copy it
# out of the way, then build the current one.
set -euo pipefail
before=$(realpath "$1")
after=$(realpath "$2")
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
SCALE=${SCALE:-10}

source bench/lib.sh

stock_plugins "$work/plugins.d" "customers.email=hash, customers.card=partial(0,4)"
SLUICE=$before start_sluice before require write "$work/plugins.d"
SLUICE=$after start_sluice after require write "$work/plugins.d"
SLUICE=$before start_sluice before-plain prefer off
SLUICE=$after start_sluice after-plain prefer off
targets=(direct before after before-plain after-plain)
echo "# $(date -u +%FT%TZ) $(nproc) cores; A/B rounds=$ROUNDS duration=${DURATION}s scale=$SCALE"
echo "# before: $before"
echo "# after:  $after"
measure_header
for scenario in "select-only simple 1" "select-only simple 16" "select-only extended 16" \
    "select-only prepared 16"; do
    read -r script mode clients <<<"$scenario"
    label="$script $mode c=$clients"
    [[ "$label" == *"${ONLY:-}"* ]] || continue
    measure "$label" -c "$clients" -j $(( clients > 1 ? 2 : 1 )) -M "$mode" -S
done
