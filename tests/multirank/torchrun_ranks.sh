# Sourced by the multi-rank fault tests: start the ranks of a job the torchrun way (each with
# RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1 and MASTER_PORT set, no
# launcher), and wait for a line in a rank's log.

# start_torchrun_ranks N LOG_PREFIX PROGRAM [ARGS...]: rank r's output goes to LOG_PREFIX<r>.log;
# sets `port` (the store's, on 127.0.0.1) and `pids` (by rank).
start_torchrun_ranks() {
  local n=$1 log=$2 r
  shift 2
  port=$((20000 + RANDOM % 20000))
  pids=()
  for ((r = 0; r < n; r++)); do
    RANK=$r WORLD_SIZE=$n LOCAL_RANK=$r LOCAL_WORLD_SIZE=$n MASTER_ADDR=127.0.0.1 \
      MASTER_PORT=$port "$@" > "$log$r.log" 2>&1 &
    pids+=($!)
  done
}

# wait_for_line FILE TEXT: up to 30 s for TEXT to appear in FILE; fails (returns 1) otherwise.
wait_for_line() {
  local _
  for _ in $(seq 150); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}
