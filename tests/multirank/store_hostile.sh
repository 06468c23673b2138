#!/usr/bin/env bash
# A hostile client against a training job's store: a 2-rank job started the torchrun way (UCX,
# store on rank 0, a store token) trains while store_probe throws garbage, huge length prefixes,
# non-numeric numbers, token-less requests, 1,100 connect/close cycles and 2,000 idle connections
# at its store on 127.0.0.1. The job must finish and write its summary; the probe checks that each
# bad request was refused and that rank 0's memory stayed bounded.
# Usage: store_hostile.sh TANDEM_TRAIN STORE_PROBE
set -u
source "$(dirname "$0")/torchrun_ranks.sh"
train=$1 probe=$2
dir=$(mktemp -d)
pids=()
cleanup() { kill -9 "${pids[@]}" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
fail() { echo "store_hostile: FAIL: $*"; for f in "$dir"/rank*.log; do tail -5 "$f"; done; exit 1; }
export TANDEM_STORE_TOKEN=job-secret-$RANDOM OMP_NUM_THREADS=1
start_torchrun_ranks 2 "$dir/rank" "$train" examples/configs/tiny.toml --set train.log_interval=1 --set train.steps=150 \
  --set train.eval_batches=1 --summary-json "$dir/summary.json"
# Probe once the first steps are done (the store is up and the job is past its set-up).
wait_for_line "$dir/rank0.log" "step 10/" || fail "the job did not reach step 10"
timeout 120 "$probe" "$port" "${pids[0]}"
probe_rc=$?
for r in 0 1; do
  wait "${pids[$r]}" || fail "rank $r exited $? while the store was probed"
done
pids=()
[ $probe_rc -eq 0 ] || fail "the probe found $probe_rc problem(s)"
[ -s "$dir/summary.json" ] || fail "no summary written"
echo "store_hostile: the job trained to the end through the probe, its store refused every bad request"
