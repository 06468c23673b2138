#!/usr/bin/env bash
# tandem-train started the way torchrun >= 2 starts it (TORCHELASTIC_USE_AGENT_STORE=True), whose
# agent already listens on MASTER_PORT with its own store: here a Python socket holds the port
# as the agent would. The job must train anyway — rank 0 serving tandem's store on MASTER_PORT + 1
# and saying so, or on TANDEM_STORE_PORT when set — and a store port that is taken too is named,
# with TANDEM_STORE_PORT as the fix.
# Usage: agent_store_test.sh PATH/TO/tandem-train   (run from the repository root)
set -u
source "$(dirname "$0")/../multirank/torchrun_ranks.sh"
train=$1
dir=$(mktemp -d)
holders=()
pids=()
cleanup() {
  { kill -KILL "${holders[@]}" "${pids[@]}"; wait "${holders[@]}" "${pids[@]}"; } 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
failures=0
fail() { echo "agent_store_test: FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "agent_store_test: ok: $*"; }
export OMP_NUM_THREADS=1

# hold_port PORT: a listening socket on 127.0.0.1:PORT until the test ends, as torchrun's agent.
hold_port() {
  python3 -c 'import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
print("listening", flush=True)
time.sleep(600)' "$1" > "$dir/hold$1.out" 2>&1 &
  holders+=($!)
  wait_for_line "$dir/hold$1.out" listening || fail "could not hold port $1"
}

# A MASTER_PORT whose next port is free as well.
pick_ports() {
  local p
  for _ in $(seq 50); do
    p=$(free_port 20000 31000) || return 1
    printf -v hex ':%04X ' "$((p + 1))"
    grep -qF "$hex" /proc/net/tcp /proc/net/tcp6 2>/dev/null || { echo "$p"; return 0; }
  done
  return 1
}

# run_job NAME [VAR=VALUE...]: 2 ranks the torchrun way with the agent's variable set, and the
# tandem-train arguments in `extra`; waits for both (at most 60 s); sets rc0 and rc1.
extra=()
run_job() {
  local name=$1 r
  shift
  pids=()
  for r in 0 1; do
    env RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 \
      MASTER_PORT=$master TORCHELASTIC_USE_AGENT_STORE=True "$@" timeout 60 "$train" \
      examples/configs/tiny.toml --set train.steps=3 --set train.eval_batches=1 "${extra[@]}" \
      > "$dir/$name$r.log" 2>&1 &
    pids+=($!)
  done
  wait "${pids[0]}"; rc0=$?
  wait "${pids[1]}"; rc1=$?
  pids=()
}

master=$(pick_ports) || { echo "agent_store_test: no free pair of ports"; exit 1; }
hold_port "$master"

# 1. MASTER_PORT held by the agent: tandem's store goes to MASTER_PORT + 1, said on rank 0's log.
run_job next
if [ $rc0 -ne 0 ] || [ $rc1 -ne 0 ]; then fail "with MASTER_PORT held the job ended $rc0/$rc1: $(tail -3 "$dir/next0.log")"
elif ! grep -q "summary: 3 steps" "$dir/next0.log"; then fail "no training: $(tail -3 "$dir/next0.log")"
elif ! grep -qF "rank 0 serves the rendezvous store on 127.0.0.1:$((master + 1)) (MASTER_PORT + 1: torchrun's agent serves its own store on MASTER_PORT $master; set TANDEM_STORE_PORT to choose another port)" "$dir/next0.log"; then fail "rank 0 does not say where the store is: $(head -3 "$dir/next0.log")"
else ok "MASTER_PORT held by torchrun's agent: the store on MASTER_PORT + 1, the job trains"; fi

# 2. TANDEM_STORE_PORT chooses the port.
store=$(free_port 31000 32000)
run_job chosen TANDEM_STORE_PORT=$store
[ $rc0 -eq 0 ] && [ $rc1 -eq 0 ] && grep -q "summary: 3 steps" "$dir/chosen0.log" &&
  grep -qF "rank 0 serves the rendezvous store on 127.0.0.1:$store (TANDEM_STORE_PORT)" "$dir/chosen0.log" &&
  ok "TANDEM_STORE_PORT chooses the store's port" || fail "TANDEM_STORE_PORT=$store: $rc0/$rc1: $(tail -3 "$dir/chosen0.log")"

# 3. MASTER_PORT + 1 taken as well: rank 0 names the port and the fix (rank 1 gives up after
# its rendezvous timeout).
hold_port "$((master + 1))"
extra=(--set comm.timeout_s=1 --set comm.rendezvous_timeout_s=2)
run_job taken
if [ $rc0 -eq 0 ]; then fail "rank 0 started with its store's port taken"
elif ! grep -q "cannot listen on 127.0.0.1:$((master + 1)) .*the store's port $((master + 1)) comes from MASTER_PORT + 1: set TANDEM_STORE_PORT to a free port, the same on every rank" "$dir/taken0.log"; then fail "the message does not name the port and TANDEM_STORE_PORT: $(tail -3 "$dir/taken0.log")"
else ok "the store's port taken too: rank 0 names it and TANDEM_STORE_PORT"; fi

[ $failures -eq 0 ] && echo "agent_store_test: PASS" || echo "agent_store_test: $failures failures"
exit $((failures > 0))
