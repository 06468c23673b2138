#!/usr/bin/env bash
# Starts N copies of a program the way torchrun or slurm's srun would — each with its launcher's
# environment variables, no mpirun — and fails unless every one exits 0. When one rank fails the
# others are stopped at once (they would otherwise wait out their rendezvous timeout), and each
# rank's output is printed with its rank in front.
# Usage: launch_env.sh torchrun|slurm N PROGRAM [ARGS...]
set -u
source "$(dirname "$0")/torchrun_ranks.sh"
mode=$1 n=$2
shift 2
# The ranks see only the launcher variables set here, not those of a slurm job this test runs in.
for v in $(compgen -e | grep '^SLURM_'); do unset "$v"; done
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
if [ "$mode" = torchrun ]; then
  port=$(free_port) || exit 1
else  # slurm: no MASTER_PORT, so the store's port is derived from the job id (29500 + id % 1000)
  port=$(free_port 29500 30500) || exit 1
  job=$((port - 29500 + 1000))
fi
declare -A rank_of
for ((r = 0; r < n; r++)); do
  if [ "$mode" = torchrun ]; then
    env RANK=$r WORLD_SIZE=$n LOCAL_RANK=$r LOCAL_WORLD_SIZE=$n MASTER_ADDR=127.0.0.1 \
      MASTER_PORT=$port "$@" > "$dir/rank$r.log" 2>&1 &
  else
    env SLURM_PROCID=$r SLURM_NTASKS=$n SLURM_LOCALID=$r SLURM_NODEID=0 SLURM_STEP_ID=0 \
      SLURM_TASKS_PER_NODE=$n SLURM_JOB_NODELIST=localhost SLURM_JOB_ID=$job "$@" \
      > "$dir/rank$r.log" 2>&1 &
  fi
  rank_of[$!]=$r
done
failed=0
for ((left = n; left > 0; left--)); do
  pid=
  wait -n -p pid
  rc=$?
  # bash's `wait -n` can answer 127 without a pid when ranks exit at once: the rest by pid below.
  [ -z "$pid" ] && break
  r=${rank_of[$pid]}
  unset "rank_of[$pid]"
  [ $rc -eq 0 ] && continue
  echo "launch_env: rank $r failed (exit $rc); stopping the others"
  failed=1
  kill "${!rank_of[@]}" 2> /dev/null
  wait
  break
done
if [ $failed -eq 0 ]; then
  for pid in "${!rank_of[@]}"; do
    wait "$pid" && continue
    rc=$?
    echo "launch_env: rank ${rank_of[$pid]} failed (exit $rc)"
    failed=1
  done
fi
for ((r = 0; r < n; r++)); do sed "s/^/[rank $r] /" "$dir/rank$r.log"; done
[ $failed -eq 0 ] && echo "launch_env: $n ranks started the $mode way (store port $port) all passed"
exit $failed
