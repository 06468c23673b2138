# Sourced by the multi-rank tests and benches: pick a free port for the rendezvous store, start the
# ranks of a job the torchrun way (each with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
# MASTER_ADDR=127.0.0.1 and MASTER_PORT set, no launcher), and wait for a line in a rank's log.

# free_port [FIRST LAST]: prints a TCP port in [FIRST, LAST) (default 20000–32000) that no socket
# on this machine holds, read from /proc/net/tcp{,6}. The default range lies below the kernel's
# ephemeral ports (ip_local_port_range starts at 32768), so an outgoing connection of another
# test cannot take it between this check and the store's bind.
free_port() {
  local first=${1:-20000} last=${2:-32000} p hex _
  for _ in $(seq 200); do
    p=$((first + RANDOM % (last - first)))
    printf -v hex ':%04X ' "$p"
    grep -qF "$hex" /proc/net/tcp /proc/net/tcp6 2>/dev/null || { echo "$p"; return 0; }
  done
  echo "free_port: no free port in [$first, $last) after 200 tries" >&2
  return 1
}

# start_torchrun_ranks N LOG_PREFIX PROGRAM [ARGS...]: rank r's output goes to LOG_PREFIX<r>.log;
# sets `port` (the store's, on 127.0.0.1) and `pids` (by rank).
start_torchrun_ranks() {
  local n=$1 log=$2 r
  shift 2
  port=$(free_port) || return 1
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
