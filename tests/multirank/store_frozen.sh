#!/usr/bin/env bash
# A frozen store host: rank 0 of a 2-rank job started the torchrun way (it serves the store) is
# stopped with SIGSTOP mid-training. Rank 1 must stop within comm.timeout_s + 10 s with exit code
# 3 (a communication fault worth a restart) and a message naming rank 0, instead of hanging.
# Usage: store_frozen.sh TANDEM_TRAIN
set -u
source "$(dirname "$0")/torchrun_ranks.sh"
train=$1
timeout_s=4
dir=$(mktemp -d)
pids=()
cleanup() { kill -CONT "${pids[@]}" 2>/dev/null; kill -9 "${pids[@]}" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
fail() { echo "store_frozen: FAIL: $*"; tail -5 "$dir"/rank1.log; exit 1; }
export OMP_NUM_THREADS=1 TANDEM_LOG_DIR=$dir
start_torchrun_ranks 2 "$dir/rank" "$train" examples/configs/tiny.toml --set train.log_interval=1 \
  --set train.steps=100000 --set comm.timeout_s=$timeout_s
wait_for_line "$dir/rank0.log" "step 5/" || fail "the job did not reach step 5"
kill -STOP "${pids[0]}"
start=$(date +%s.%N)
timeout 60 tail --pid="${pids[1]}" -f /dev/null
wait "${pids[1]}"
rc=$?
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
cat "$dir/rank1.log" | grep -v "step\|^ \|=" | tail -3
[ $rc -eq 3 ] || fail "rank 1 exited $rc, expected 3"
awk -v e="$elapsed" -v t=$timeout_s 'BEGIN { exit !(e <= t + 10) }' \
  || fail "rank 1 took ${elapsed} s, more than comm.timeout_s + 10 s"
grep -q "communication fault: .*rank 0" "$dir/rank1.log" || fail "no message naming rank 0"
echo "store_frozen: rank 1 stopped ${elapsed} s after rank 0 froze, naming it"
