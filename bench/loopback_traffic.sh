#!/usr/bin/env bash
# Bytes a training step puts on the network, counted by the kernel: each measurement runs in a
# network namespace of its own (unshare -n), whose loopback interface carries only this job's
# traffic, and per-step bytes are the difference between a long and a short run (start-up,
# address exchange and the final evaluation cancel out).
#   1. mpirun, 4 ranks, tiny.toml (the demo grid, and dp 4 × ep 2): MPI and UCX move data in shared
#      memory, so what is left is store traffic: goal at most 2 KB per step.
#   2. torchrun-style, 4 ranks, data parallel (no MPI; UCX over TCP on loopback): bytes per step
#      divided by the gradient bytes; the ring's bound is 2(N-1) = 6, the goal 2(N-1)·1.1.
# Usage: bench/loopback_traffic.sh BUILD_DIR   (needs root for the namespace)
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
if [ "${TANDEM_IN_NETNS:-}" != 1 ]; then
  exec env TANDEM_IN_NETNS=1 unshare -n bash "$0" "$build" \
    || { echo "loopback_traffic: needs root for unshare -n"; exit 1; }
fi
ip link set lo up
tx() { awk '/^ *lo:/ {print $10}' /proc/net/dev; }
source tests/multirank/torchrun_ranks.sh
config=examples/configs/tiny.toml
short=5 long=25
mpi_run() {  # steps, extra args...
  local steps=$1
  shift
  mpirun --allow-run-as-root --oversubscribe --mca mpi_yield_when_idle 1 -x OMP_NUM_THREADS=1 \
    -np 4 "$build/bin/tandem-train" $config --set train.steps="$steps" --set train.eval_batches=1 \
    --summary-json "$build/loopback-summary.json" "$@" > "$build/loopback-run.log" 2>&1
}
torchrun_run() {  # steps
  local port pids=() r
  port=$(free_port)
  for r in 0 1 2 3; do
    RANK=$r WORLD_SIZE=4 LOCAL_RANK=$r LOCAL_WORLD_SIZE=4 MASTER_ADDR=127.0.0.1 \
      MASTER_PORT=$port OMP_NUM_THREADS=1 UCX_TLS=tcp,self "$build/bin/tandem-train" $config \
      --set train.steps="$1" --set train.eval_batches=1 --set comm.node_collectives=false \
      --summary-json "$build/loopback-summary.json" > "$build/loopback-rank$r.log" 2>&1 &
    pids+=($!)
  done
  for r in "${pids[@]}"; do wait "$r"; done
}
per_step() {  # runner, args... → bytes per step
  local a b c
  a=$(tx); "$@" $short; b=$(tx); "$@" $long; c=$(tx)
  echo $(( ((c - b) - (b - a)) / (long - short) ))
}
summary() { python3 -c "import json,sys; print(json.load(open('$build/loopback-summary.json'))[sys.argv[1]])" "$1"; }

demo_grid() {
  mpi_run "$1" --set parallel.pp=2 --set parallel.ep=2 --set parallel.schedule=dualpipe \
    --set parallel.microbatches=4
}
dp4_ep2() { mpi_run "$1" --set parallel.ep=2; }
echo "loopback_traffic: bytes per training step on a private loopback (TX counter)"
for grid in demo_grid dp4_ep2; do
  bytes=$(per_step $grid)
  printf "  mpirun -np 4, %-9s %8d bytes/step (goal <= 2048); store requests/step/rank %.3f, communication ops/step/rank %.0f\n" \
    $grid "$bytes" "$(summary store_requests_per_step_per_rank)" \
    "$(summary communication_ops_per_step_per_rank)"
done
bytes=$(per_step torchrun_run)
params=$(summary params)
gradient=$((params * 4))
python3 -c "
b, g = $bytes, $gradient
print(f'  torchrun-style dp 4 over UCX/TCP: {b} bytes/step, gradients {g} bytes: {b / g:.2f} x '
      f'(ring bound 2(N-1) = 6, goal <= 6.6)')"
