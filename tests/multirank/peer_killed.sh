#!/usr/bin/env bash
# A dead peer is a reported fault, not an abort: rank 1 of a 2-rank job started the torchrun way
# (UCX, no MPI) is killed with SIGKILL mid-training, three times. Each time rank 0 must exit with
# code 3 within comm.timeout_s + 10 s and name rank 1 — never die of UCX's SIGABRT. Then a SIGHUP
# must end a rank (UCX's own handler would swallow it and switch its logs to debug).
# Usage: peer_killed.sh TANDEM_TRAIN
set -u
source "$(dirname "$0")/torchrun_ranks.sh"
train=$1
timeout_s=5
dir=$(mktemp -d)
pids=()
cleanup() { kill -9 "${pids[@]}" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
fail() { echo "peer_killed: FAIL: $*"; grep -v "step\|^ \|=" "$dir"/rank0.log | tail -5; exit 1; }
export OMP_NUM_THREADS=1 TANDEM_LOG_DIR=$dir
start_job() {
  start_torchrun_ranks 2 "$dir/rank" "$train" examples/configs/tiny.toml --set train.log_interval=1 \
    --set train.steps=100000 --set comm.timeout_s=$timeout_s
  wait_for_line "$dir/rank0.log" "step 5/" || fail "the job did not reach step 5"
}
for attempt in 1 2 3; do
  start_job
  kill -9 "${pids[1]}"
  start=$(date +%s.%N)
  wait "${pids[0]}"
  rc=$?
  elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  wait "${pids[1]}" 2>/dev/null
  grep "communication fault" "$dir/rank0.log" | cut -c1-300
  [ $rc -ne 134 ] || fail "attempt $attempt: rank 0 aborted (SIGABRT) instead of reporting"
  [ $rc -eq 3 ] || fail "attempt $attempt: rank 0 exited $rc, expected 3"
  awk -v e="$elapsed" -v t=$timeout_s 'BEGIN { exit !(e <= t + 10) }' \
    || fail "attempt $attempt: rank 0 took ${elapsed} s"
  grep -q "communication fault: .*rank 1 " "$dir/rank0.log" || fail "attempt $attempt: rank 1 not named"
  echo "peer_killed: attempt $attempt: rank 0 reported rank 1's death after ${elapsed} s (exit 3)"
done
start_job
kill -HUP "${pids[0]}"
wait "${pids[0]}"
rc=$?
kill -9 "${pids[1]}" 2>/dev/null
[ $rc -eq 129 ] || fail "SIGHUP left rank 0 running or exiting $rc (expected 129: killed by SIGHUP)"
echo "peer_killed: SIGHUP ends a rank (exit 129)"
