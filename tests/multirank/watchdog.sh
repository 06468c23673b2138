#!/usr/bin/env bash
# Watchdog: rank 1 of 3 skips an all_reduce and waits at the next barrier. The job must stop
# within timeout + 5 s with exit code 3 and a report naming the mismatch — rank 1 missing from
# all_reduce #2 (what ranks 0 and 2 see) or ranks 0 and 2 missing from barrier #2 (what rank 1
# sees; under mpirun whichever reports first ends the job) — and every rank's flight record
# must be in the flight-record directory.
# Usage: watchdog.sh mpirun|torchrun PATH/TO/comm_test
set -u
source "$(dirname "$0")/torchrun_ranks.sh"
mode=$1 comm_test=$2
timeout_s=3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
out=$dir/out
start=$(date +%s.%N)
export TANDEM_COMM_TIMEOUT_MS=$((timeout_s * 1000)) TANDEM_LOG_DIR=$dir
if [ "$mode" = mpirun ]; then
  timeout 60 mpirun --allow-run-as-root --oversubscribe --mca mpi_yield_when_idle 1 -np 3 \
    -x TANDEM_COMM_TIMEOUT_MS -x TANDEM_LOG_DIR "$comm_test" --skip-collective > "$out" 2>&1
  rc=$?
else
  start_torchrun_ranks 3 "$dir/rank" timeout 60 "$comm_test" --skip-collective
  rc=3  # every rank must exit 3: the first that does not decides
  for pid in "${pids[@]}"; do
    wait "$pid"
    code=$?
    [ $code -ne 3 ] && [ $rc -eq 3 ] && rc=$code
  done
  cat "$dir"/rank?.log > "$out"
fi
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
cat "$out"
fail() { echo "watchdog: FAIL: $*"; exit 1; }
[ $rc -ne 124 ] || fail "the job hung until the test's own 60 s limit"
[ $rc -eq 3 ] || fail "exit code $rc, expected 3 (a communication fault)"
awk -v e="$elapsed" -v t=$timeout_s 'BEGIN { exit !(e < t + 5 + 2) }' \
  || fail "took ${elapsed}s, more than timeout + 5 s (+2 s start-up)"
# The UCX world's first collective is the barrier that ends its set-up, so its numbers are one up.
skipped=2
[ "$mode" = torchrun ] && skipped=3
# Jobs bootstrapped through the store (torchrun) know every rank's host and name it.
at=""
[ "$mode" = torchrun ] && at=" on $(hostname)"
seen_by_others="all_reduce #$skipped on group 'world' (4096 bytes) did not complete within 3.[0-9] s; ranks that never arrived: 1$at (last entered on this group: barrier #$skipped; waiting in barrier #$skipped"
seen_by_rank1="rank 1: barrier #$skipped on group 'world' (0 bytes) did not complete within 3.[0-9] s; ranks that never arrived: 0$at (last entered on this group: all_reduce #$skipped; waiting in all_reduce #$skipped on group 'world' (4096 bytes), pending for 3.[0-9] s), 2$at (last entered on this group: all_reduce #$skipped;"
grep -q "$seen_by_others" "$out" || grep -q "$seen_by_rank1" "$out" \
  || fail "no report naming the rank missing from all_reduce #2 (or those missing from barrier #2)"
if [ "$mode" = torchrun ]; then  # nothing kills the others: each reports
  [ "$(grep -c "$seen_by_others" "$out")" -eq 2 ] || fail "ranks 0 and 2 did not both report"
  grep -q "$seen_by_rank1" "$out" || fail "rank 1 did not report ranks 0 and 2 missing"
fi
for r in 0 1 2; do
  record=$dir/tandem-flight-rank$r.tsv
  [ -s "$record" ] || fail "no flight record of rank $r in $dir"
  grep -q "^group	world	$skipped	" "$record" || fail "rank $r's record does not show world at #$skipped"
done
echo "watchdog ($mode): stopped after ${elapsed}s with the mismatch named and 3 flight records"
