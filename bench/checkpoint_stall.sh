#!/usr/bin/env bash
# What a checkpoint costs a training step, and how fast it is written, against references
# measured in the same run: small.toml trains 25 steps without checkpoints, then with one every 5,
# asynchronous (the default) and synchronous. Two measures of the cost: the stall (the mean step
# time of checkpoint steps minus that of the others, as a fraction of a step) and the whole
# run's extra time per checkpoint against the run without any (which also counts the background
# writer slowing the steps after a checkpoint). The write bandwidth (background thread: write +
# fsync of the shard) is compared with `dd` writing and fsyncing as many bytes to the same
# directory, and the copy into host memory with memcpy bandwidth over the same size (numpy's
# copyto between two warm buffers, from scripts/python-test-env).
# Usage: bench/checkpoint_stall.sh BUILD [DIR]   (DIR: where checkpoints go; default: a temp dir)
set -euo pipefail
build=$1
dir=${2:-$(mktemp -d)}
mkdir -p "$dir"
trap 'rm -rf "$dir"/bench-*' EXIT
py=/usr/bin/python3
scripts/prepare-data >/dev/null
common=(examples/configs/small.toml --set train.steps=25 --set train.eval_interval=0
  --set train.eval_batches=1 --set checkpoint.interval=5 --set checkpoint.keep=1)
for mode in none async sync; do
  flags=(--set checkpoint.async=$([ $mode = async ] && echo true || echo false)
    --set checkpoint.dir="$dir/bench-$mode")
  [ $mode != none ] || flags=(--set checkpoint.interval=0)
  "$build/bin/tandem-train" "${common[@]}" "${flags[@]}" --summary-json "$dir/bench-$mode.json" \
    > "$dir/bench-$mode.log" 2>&1 || { cat "$dir/bench-$mode.log"; exit 1; }
done
bytes=$($py -c 'import json,sys; print(json.load(open(sys.argv[1]))["checkpoints"]["bytes_this_rank"] // 5)' \
  "$dir/bench-async.json")
mb=$(( (bytes + (1 << 20) - 1) >> 20 ))
dd_out=$(dd if=/dev/zero of="$dir/bench-dd" bs=1M count=$mb conv=fsync 2>&1 | tail -n1)
rm -f "$dir/bench-dd"
scripts/python-test-env "$build/python-test-env" >/dev/null
memcpy_bw=$("$build/python-test-env/bin/python" -c '
import numpy as np, sys, time
n = int(sys.argv[1]); a = np.ones(n, np.uint8); b = np.zeros(n, np.uint8)
best = min((lambda t: (np.copyto(b, a), time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(5))
print(n / best)' "$bytes")
$py - "$dir" "$bytes" "$dd_out" "$memcpy_bw" <<'PY'
import json, re, sys
d, shard_bytes, dd, memcpy_bw = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
m = re.search(r"copied, ([0-9.]+) s", dd)
dd_bw = shard_bytes / float(m.group(1))
print(f"checkpoint of small.toml: {shard_bytes / 1e6:.1f} MB per checkpoint (parameters, m, v)")
def train_seconds(s):
    tokens = s["config"]["train"]["batch_size"] * s["config"]["model"]["seq_len"]
    return tokens * (s["steps"] - s["first_step"]) / s["tokens_per_second"]
none = json.load(open(f"{d}/bench-none.json"))
base = train_seconds(none)
print(f"none : {base:.2f} s for {none['steps']} steps ({base / none['steps'] * 1e3:.0f} ms a step)")
for mode in ["async", "sync"]:
    s = json.load(open(f"{d}/bench-{mode}.json"))
    c = s["checkpoints"]
    n = c["saved"]
    extra = (train_seconds(s) - base) / n
    copy_bw = shard_bytes * n / c["copy_seconds"]
    write_bw = c["write_bytes_per_second"]
    print(f"{mode:5}: step {c['step_seconds_without'] * 1e3:.0f} ms, with a checkpoint "
          f"{c['step_seconds_with_checkpoint'] * 1e3:.0f} ms: stall {c['stall_seconds'] * 1e3:.0f} ms "
          f"= {c['stall_fraction_of_step'] * 100:.1f}% of a step ({c['checkpoint_steps_measured']} checkpoint steps); "
          f"whole run +{extra * 1e3:.0f} ms per checkpoint = {extra / (base / none['steps']) * 100:.1f}% of a step")
    print(f"       in the training thread: {c['in_step_seconds'] * 1e3:.0f} ms per checkpoint "
          f"(copy, waits, polls, commit) = {c['in_step_fraction_of_step'] * 100:.1f}% of a step")
    print(f"       copy to host {copy_bw / 1e9:.2f} GB/s = {copy_bw / memcpy_bw:.2f} x memcpy "
          f"({memcpy_bw / 1e9:.2f} GB/s); write + fsync {write_bw / 1e6:.0f} MB/s = "
          f"{write_bw / dd_bw:.2f} x dd conv=fsync ({dd_bw / 1e6:.0f} MB/s)")
PY
