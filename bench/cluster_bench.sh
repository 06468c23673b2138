#!/usr/bin/env bash
# The measurements of the cluster on one machine (scripts/netns-cluster; root): every rank its own
# namespace "node" or two ranks per node, joined by veth links that tc limits (no netem here:
# bandwidth only, no added latency). Jobs start as on a real cluster: tandem-launch --nnodes N on
# every node, the store served from node 0.
#   1. expert dispatch + combine across 2 nodes (2 ranks each), flat vs hierarchical, bytes on
#      the wire against the algorithms' counts (bench/cluster_dispatch.cc);
#   2. the exposed expert all-to-all per step with and without the F&B overlap, DualPipe and
#      1F1B, pp 2 × dp 2 (ep 2) with every rank on its own node, at two link rates;
#   3. step time and bubble of 1F1B, ZB-H1 and DualPipe on pp 4 (one rank per node) next to the
#      simulator's prediction from the instruction costs measured in the same run.
# Usage: bench/cluster_bench.sh BUILD [RATE_FAST RATE_SLOW]   (defaults 2gbit 500mbit)
set -euo pipefail
build=$(realpath "$1")
fast=${2:-2gbit} slow=${3:-500mbit}
cluster=$PWD/scripts/netns-cluster
export NETNS_CLUSTER_NAME=tbb$$
tmp=$(mktemp -d)
trap '"$cluster" down; rm -rf "$tmp"' EXIT
port=29800

# on_nodes N PROGRAM ARGS...: one tandem-launch per node (ranks per node: $PER_NODE, default 1);
# prints rank 0's lines that say something about the run.
on_nodes() {
  local nodes=$1; shift
  port=$((port + 1))
  for ((n = 0; n < nodes; n++)); do
    "$cluster" exec $n env TANDEM_RUN_ID="bench-$port" UCX_TLS=tcp,self,sm OMP_NUM_THREADS=1 \
      "$build/bin/tandem-launch" --nnodes "$nodes" --node-rank $n --nproc-per-node "${PER_NODE:-1}" \
      --master-addr "$("$cluster" addr 0)" --master-port $port -- "$@" > "$tmp/node$n.log" 2>&1 &
  done
  local failed=0
  for ((n = 0; n < nodes; n++)); do wait -n || failed=1; done
  [ $failed = 0 ] || { cat "$tmp"/node*.log; echo "cluster_bench: a run failed" >&2; exit 1; }
  grep -E "cluster_dispatch|flat|hierarchical|step [0-9.]+ ms|all-to-all" "$tmp/node0.log" |
    sed 's/^\[rank 0\] //'
}

echo "== 1. dispatch + combine across 2 nodes × 2 ranks, links $fast each way"
"$cluster" up --nodes 2 --rate "$fast"
PER_NODE=2 on_nodes 2 "$build/bin/cluster_dispatch"
"$cluster" down

"$cluster" up --nodes 4 --rate "$fast"
tiny=(examples/configs/tiny.toml --set train.threads=1)
for rate in "$fast" "$slow"; do
  "$cluster" rate "$rate"
  echo "== 2. exposed all-to-all, pp 2 × dp 2 (ep 2), one rank per node, links $rate"
  for schedule in dualpipe 1f1b; do
    on_nodes 4 "$build/bin/pipeline_schedules" "${tiny[@]}" --set parallel.pp=2 --set parallel.ep=2 \
      --set parallel.microbatches=8 --schedules $schedule --overlap-compare
  done
done
"$cluster" rate "$fast"
echo "== 3. schedules on pp 4, one rank per node, links $fast"
on_nodes 4 "$build/bin/pipeline_schedules" "${tiny[@]}" --set parallel.pp=4 \
  --set parallel.microbatches=8 --schedules 1f1b,zb-h1,dualpipe
