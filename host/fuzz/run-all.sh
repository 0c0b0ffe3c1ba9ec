#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600), one after the other, starting from the
# committed seeds; prints each target's final line (executions, coverage, corpus size).
# Usage: host/fuzz/run-all.sh [SECONDS [TARGET...]]
# (SLUICE_FUZZ_PLUGINS=dir adds policies to `relay`)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
targets=(relay client_messages upstream_login startup_packet)
[ $# -gt 1 ] && targets=("${@:2}")
cargo +nightly fuzz build -O
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    cp -n fuzz/seeds/"$target"/* "fuzz/corpus/$target/"
    log="fuzz/artifacts/$target.log"
    mkdir -p fuzz/artifacts
    echo "== $target: ${seconds}s"
    cargo +nightly fuzz run -O "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 ||
        { echo "$target FAILED: see $log"; tail -40 "$log"; exit 1; }
    grep -E "^#[0-9]+[[:space:]]+DONE" "$log" | tail -1
    grep -E "stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)" "$log"
done
