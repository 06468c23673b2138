#!/usr/bin/env bash
# Watchdog: rank 1 of 3 skips an all_reduce. The others must stop within timeout + 5 s with a
# message naming rank 1 as the one that never arrived, and the job must exit non-zero.
# Usage: watchdog.sh PATH/TO/comm_test
set -u
comm_test=$1
timeout_s=3
out=$(mktemp)
trap 'rm -f "$out"' EXIT
start=$(date +%s.%N)
TANDEM_COMM_TIMEOUT_MS=$((timeout_s * 1000)) timeout 60 mpirun --allow-run-as-root --oversubscribe \
  --mca mpi_yield_when_idle 1 -np 3 "$comm_test" --skip-collective > "$out" 2>&1
rc=$?
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
cat "$out"
fail() { echo "watchdog: FAIL: $*"; exit 1; }
[ $rc -ne 0 ] || fail "the job exited 0"
[ $rc -ne 124 ] || fail "the job hung until the test's own 60 s limit"
awk -v e="$elapsed" -v t=$timeout_s 'BEGIN { exit !(e < t + 5 + 2) }' || fail "took ${elapsed}s, more than timeout + 5 s (+2 s start-up)"
grep -q "all_reduce #2 on group 'world' (4096 bytes) did not complete within 3.[0-9] s; ranks that never arrived: 1 (last entered on this group: barrier #2)" "$out" \
  || fail "no report naming rank 1 as missing from all_reduce #2"
echo "watchdog: stopped after ${elapsed}s with the missing rank named"
