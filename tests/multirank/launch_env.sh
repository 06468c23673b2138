#!/usr/bin/env bash
# Starts N copies of a program the way torchrun or slurm's srun would — each with its launcher's
# environment variables, no mpirun — and fails unless every one exits 0.
# Usage: launch_env.sh torchrun|slurm N PROGRAM [ARGS...]
set -u
mode=$1 n=$2
shift 2
port=$((20000 + RANDOM % 20000))
job=$((RANDOM % 1000 + 1))
[ "$mode" = slurm ] && port=$((29500 + job % 1000))
pids=()
for ((r = 0; r < n; r++)); do
  if [ "$mode" = torchrun ]; then
    env RANK=$r WORLD_SIZE=$n LOCAL_RANK=$r LOCAL_WORLD_SIZE=$n MASTER_ADDR=127.0.0.1 \
      MASTER_PORT=$port "$@" &
  else
    env SLURM_PROCID=$r SLURM_NTASKS=$n SLURM_LOCALID=$r SLURM_NODEID=0 SLURM_TASKS_PER_NODE=$n \
      SLURM_JOB_NODELIST=localhost SLURM_JOB_ID=$job "$@" &
  fi
  pids+=($!)
done
failed=0
for r in "${!pids[@]}"; do
  wait "${pids[$r]}" || { echo "launch_env: rank $r failed"; failed=1; }
done
[ $failed -eq 0 ] && echo "launch_env: $n ranks started the $mode way all passed"
exit $failed
