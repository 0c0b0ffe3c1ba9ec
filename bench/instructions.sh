#!/usr/bin/env bash
# The gateway's own work per statement, counted rather than timed: user-space instructions
# (callgrind's Ir) per statement of gateway builds as users run them (TLS, audit "write", the
# stock plugins), for a fixed pgbench workload. On a shared two-core VM the CPU time per
# statement moves by 5-10 % between runs; this count repeats within a few tenths of a percent,
# so a change worth one microsecond shows. What it does not see: the kernel (syscalls, TCP,
# scheduling) and cache misses. Under valgrind the CPU has no SHA extensions, so SHA-256 (the
# audit chain's) counts several times what it costs on hardware that has them.
#
#   bench/instructions.sh BINARY...
#   STATEMENTS=4000 MODES="simple prepared" bench/instructions.sh /tmp/sluice-before target/release/sluice
#
# Each binary's callgrind profile is left in bench/callgrind/ for callgrind_annotate.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: bench/instructions.sh BINARY..." >&2; exit 2; }
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null ||
    { echo "valgrind not found: apt-get install valgrind" >&2; exit 1; }
binaries=()
for b in "$@"; do binaries+=("$(realpath "$b")"); done
cd "$(dirname "$0")/.."
SCALE=${SCALE:-1}
CLIENTS=${CLIENTS:-4}
STATEMENTS=${STATEMENTS:-2000}
MODES=${MODES:-simple extended prepared}
out_dir=$PWD/bench/callgrind

source bench/lib.sh

mkdir -p "$out_dir"
stock_plugins "$work/plugins.d" "customers.email=hash, customers.card=partial(0,4)"
echo "# $(date -u +%FT%TZ) user-space instructions per statement (callgrind Ir), select-only," \
    "$CLIENTS clients x $STATEMENTS statements after a warm-up; as users run it"
printf "%-10s %-40s %14s\n" mode binary ir_per_stmt
for mode in $MODES; do
    for i in "${!binaries[@]}"; do
        name=cg$i-$mode
        profile=$out_dir/$(basename "${binaries[$i]}")-$mode.callgrind
        SLUICE=${binaries[$i]} SLUICE_WRAP="valgrind --tool=callgrind --callgrind-out-file=$work/$name.out" \
            start_sluice "$name" require write "$work/plugins.d"
        run() {
            PGPASSWORD=${pass[$name]} PGSSLMODE=require pgbench -n -h 127.0.0.1 -p "${port[$name]}" \
                -U bench -c "$CLIENTS" -j 1 -t "$1" -M "$mode" -S bench >/dev/null 2>&1 || {
                echo "pgbench against $name failed" >&2
                exit 1
            }
        }
        # Sessions, plugin instances and plan caches warm first; only what follows counts.
        run 200
        callgrind_control -z "${pid[$name]}" >/dev/null 2>&1
        run "$STATEMENTS"
        callgrind_control -d "${pid[$name]}" >/dev/null 2>&1
        # The dump of what followed the zeroing: the part file (the process writes another at
        # its exit).
        part=$(ls -t "$work/$name.out".* | head -n1)
        cp "$part" "$profile"
        kill "${pid[$name]}"
        wait "${pid[$name]}" 2>/dev/null || true
        ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$part")
        printf "%-10s %-40s %14.0f\n" "$mode" "${binaries[$i]}" \
            "$(awk -v ir="$ir" -v n=$((CLIENTS * STATEMENTS)) 'BEGIN {print ir / n}')"
    done
done
