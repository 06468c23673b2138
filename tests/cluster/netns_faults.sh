#!/usr/bin/env bash
# Faults across two namespace nodes (scripts/netns-cluster), 2 ranks each under one tandem-launch
# per node (pp 2 × dp 2, DualPipe, ep 2, ZeRO-1, a checkpoint every 5 steps). Each case must end
# with the job finished by every node's launcher and every logged loss equal to the uninterrupted
# run's, bit for bit:
#   1. node 1 dies whole (its launcher SIGKILLed, its ranks with it): node 0's ranks report the
#      lost peers by rank and host, node 0's launcher waits for node 1's to come back, and once
#      it is started again every node restarts from the newest checkpoint;
#   2. node 1's link is cut mid-step (ip link set eth0 down) and brought back 8 s later: the
#      ranks name the peers they lost by rank and host, both launchers restart;
#   3. node 0 dies whole (its launcher with the store): node 1's launcher says so and waits, and
#      joins the job node 0's new launcher opens.
# Skipped (exit 77) where the namespace cluster cannot be made.
# Usage: netns_faults.sh BUILD/bin   (run from the repository root)
set -euo pipefail
bin=$(realpath "$1")
cluster=$PWD/scripts/netns-cluster
export NETNS_CLUSTER_NAME=tnf$$
code=0; "$cluster" up --nodes 2 || code=$?
[ "$code" = 0 ] || { [ "$code" = 77 ] && echo "SKIP: the namespace cluster cannot run here"; exit "$code"; }
tmp=$(mktemp -d)
declare -A launcher_of
cleanup() {
  for p in "${launcher_of[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  "$cluster" down
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$tmp"/*.node*.log; do echo "--- $f"; tail -n 30 "$f"; done; exit 1; }
py=/usr/bin/python3
master=$("$cluster" addr 0)
steps=30
job=(examples/configs/tiny.toml --set train.steps=$steps --set train.eval_interval=0
  --set model.d_model=64 --set model.seq_len=32 --set train.batch_size=8 --set train.eval_batches=1
  --set train.threads=1 --set parallel.pp=2 --set parallel.ep=2 --set parallel.schedule=dualpipe
  --set parallel.microbatches=4 --set parallel.zero1=true --set checkpoint.interval=5
  --set comm.timeout_s=5 --set comm.rendezvous_timeout_s=120)

# start NAME NODE PORT: node NODE's launcher of job NAME, in the background.
start() {
  local name=$1 node=$2 port=$3
  "$cluster" exec "$node" env TANDEM_STORE_TOKEN="secret-$name" UCX_TLS=tcp,self,sm \
    "$bin/tandem-launch" --nnodes 2 --node-rank "$node" --nproc-per-node 2 --master-addr "$master" \
    --master-port "$port" --max-restarts 3 --heartbeat-timeout-s 10 --rendezvous-timeout-s 60 \
    --log-dir "$tmp/$name.logs$node" -- "$bin/tandem-train" "${job[@]}" \
    --set checkpoint.dir="$tmp/$name.ck" --log-jsonl "$tmp/$name.jsonl" \
    >> "$tmp/$name.node$node.log" 2>&1 &
  launcher_of[$name$node]=$!
}
# finish NAME: both launchers of job NAME must exit 0.
finish() {
  local name=$1
  for node in 0 1; do
    local c=0; wait "${launcher_of[$name$node]}" || c=$?
    unset "launcher_of[$name$node]"
    [ "$c" = 0 ] || fail "$name: node $node's launcher exited $c"
  done
}
newest_step() {  # the newest step record of job $1
  [ -s "$tmp/$1.jsonl" ] || { echo 0; return; }
  $py -c 'import json,sys; print(max([r["step"] for r in map(json.loads, open(sys.argv[1])) if "loss" in r] or [0]))' "$tmp/$1.jsonl"
}
wait_step() {  # wait_step NAME STEP
  local deadline=$((SECONDS + 120))
  until [ "$(newest_step "$1")" -ge "$2" ]; do
    [ $SECONDS -lt $deadline ] || fail "$1 never reached step $2"
    sleep 0.05
  done
}
same_losses() {  # same_losses NAME: every record of NAME equals the reference's step
  $py - "$tmp/ref.jsonl" "$tmp/$1.jsonl" "$steps" "$1" <<'PY'
import json, sys
ref = {r["step"]: r["loss"] for r in map(json.loads, open(sys.argv[1])) if "loss" in r}
got = [r for r in map(json.loads, open(sys.argv[2])) if "loss" in r]
assert got[-1]["step"] == int(sys.argv[3]), got[-1]
bad = [r for r in got if r["loss"] != ref[r["step"]]]
assert not bad, f"losses differ from the uninterrupted run: {bad[:2]}"
print(f"{sys.argv[4]}: {len(got)} step records (restarts included) equal the uninterrupted run's bit for bit")
PY
}

kill_node() {  # kill_node NAME NODE: node NODE's launcher of job NAME dies, its ranks with it
  kill -9 "${launcher_of[$1$2]}"
  wait "${launcher_of[$1$2]}" 2>/dev/null || true
  unset "launcher_of[$1$2]"
}
wait_log() {  # wait_log FILE PATTERN WHAT: up to 60 s for PATTERN in FILE, else fail with WHAT
  local deadline=$((SECONDS + 60))
  until grep -q "$2" "$1"; do
    [ $SECONDS -lt $deadline ] || fail "$3"
    sleep 0.2
  done
}

echo "== the uninterrupted run"
start ref 0 29711; start ref 1 29711; finish ref
grep -q "the job (every node) ends: done (exit 0)" "$tmp/ref.node0.log" || fail "ref: no clean end"

echo "== 1. node 1 dies whole, and its launcher is started again"
start dead1 0 29712; start dead1 1 29712
wait_step dead1 8
kill_node dead1 1
wait_log "$tmp/dead1.node0.log" "waiting for node 1's launcher to join attempt 1" \
  "node 0 never waited for node 1"
grep -E "communication fault|lost" "$tmp/dead1.node0.log" | head -2
grep -q -E "rank [23] .*tnf$$-node1|tnf$$-node1.*rank [23]" "$tmp/dead1.node0.log" ||
  fail "node 0's ranks did not name the lost peers with their host"
start dead1 1 29712
finish dead1
same_losses dead1

echo "== 2. node 1's link is cut mid-step, and back 8 s later"
start cut 0 29713; start cut 1 29713
wait_step cut 8
"$cluster" exec 1 ip link set eth0 down
sleep 8
"$cluster" exec 1 ip link set eth0 up
finish cut
# The ranks name the peers they lost by rank and host (UCX's endpoint timeout, or the watchdog's
# report of the ranks that never arrived).
faults=$(grep -h "communication fault" "$tmp"/cut.node*.log || true)
echo "$faults" | head -2
grep -q -E "rank [0-9] on tnf$$-node[01]|never arrived: [0-9] on tnf$$-node" <<< "$faults" ||
  fail "no rank named the peers it lost by rank and host"
same_losses cut

echo "== 3. node 0 dies whole (its store with it), and its launcher is started again"
start dead0 0 29714; start dead0 1 29714
wait_step dead0 8
kill_node dead0 0
wait_log "$tmp/dead0.node1.log" "node 0's launcher (its store at .*) is gone" \
  "node 1 did not notice node 0's end"
start dead0 0 29714
finish dead0
grep -q "node 0's launcher is back; joining the attempt it opens" "$tmp/dead0.node1.log" ||
  fail "node 1 did not rejoin"
same_losses dead0
echo "netns_faults: passed"
