#!/usr/bin/env bash
# What metrics cost a training step: the same config trained with monitoring.metrics_port off and
# on, in alternating runs (off, on, off, on, ...) so that a machine whose load drifts (other builds
# on a shared box) weighs on both alike. With metrics on, a scraper reads /metrics every second
# (Prometheus's usual interval is 15 s: this is harsher). Each run's step time is the median of
# its --log-jsonl step_seconds after the first 5 steps (warm-up); the result is the mean of the
# per-run medians each way, their difference relative to off, and the spread of the paired
# differences, so one noisy pair cannot pass for an effect; and each way's fastest run, as load
# from other processes only ever slows a run down. With WITH_CONTROL=1, "on" is the whole
# monitoring surface: metrics with the scraper, the /status page read every 5 s (its refresh),
# and the control service (control.port) with a `tandemctl watch` client streaming every step.
# Usage: [WITH_CONTROL=1] bench/metrics_overhead.sh BUILD [PAIRS] [STEPS] [CONFIG] [--set ...]...
set -euo pipefail
build=$1
pairs=${2:-6}
steps=${3:-60}
config=${4:-examples/configs/tiny.toml}
shift $(($# < 4 ? $# : 4))
extra=("$@")
source "$(dirname "$0")/../tests/multirank/torchrun_ranks.sh"
tmp=$(mktemp -d)
scraper="" page_reader="" watcher=""
echo "secret-token" > "$tmp/token"
trap 'kill $scraper $page_reader $watcher 2> /dev/null; rm -rf "$tmp"' EXIT
scripts/prepare-data > /dev/null
run() {  # run MODE INDEX
  local mode=$1 i=$2 port flags=()
  if [ "$mode" = on ]; then
    port=$(free_port)
    flags=(--set monitoring.metrics_port="$port")
    (while sleep 1; do curl -s -o /dev/null "http://127.0.0.1:$port/metrics"; done) &
    scraper=$!
    if [ "${WITH_CONTROL:-0}" = 1 ]; then
      control_port=$(free_port)
      flags+=(--set control.port="$control_port" --set control.token_file="$tmp/token")
      (while sleep 5; do curl -s -o /dev/null "http://127.0.0.1:$port/status"; done) &
      page_reader=$!
      (for _ in $(seq 100); do
        "$build/bin/tandemctl" --addr "127.0.0.1:$control_port" watch > /dev/null 2>&1 && break
        sleep 0.1
      done) &
      watcher=$!
    fi
  fi
  "$build/bin/tandem-train" "$config" --set train.steps="$steps" --set train.eval_interval=0 \
    --set train.eval_batches=1 "${extra[@]}" "${flags[@]}" --log-jsonl "$tmp/$mode-$i.jsonl" \
    > "$tmp/$mode-$i.log" 2>&1 || { cat "$tmp/$mode-$i.log"; exit 1; }
  for helper in "$scraper" "$page_reader"; do
    [ -n "$helper" ] && { kill "$helper" 2> /dev/null || true; }
  done
  [ -n "$watcher" ] && { kill "$watcher" 2> /dev/null || true; }
  wait 2> /dev/null || true
  scraper="" page_reader="" watcher=""
}
for ((i = 0; i < pairs; i++)); do
  run off "$i"
  run on "$i"
done
/usr/bin/python3 - "$tmp" "$pairs" "$config" "${extra[*]:-}" << 'PY'
import json, statistics, sys
tmp, pairs, config, extra = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def median_step(mode, i):
    records = [json.loads(l) for l in open(f"{tmp}/{mode}-{i}.jsonl")]
    seconds = [r["step_seconds"] for r in records if "step_seconds" in r][5:]
    return statistics.median(seconds)
off = [median_step("off", i) for i in range(pairs)]
on = [median_step("on", i) for i in range(pairs)]
diff = [(b - a) / a for a, b in zip(off, on)]
import os
what = "metrics + /status + control with a watcher" if os.environ.get("WITH_CONTROL") == "1" else "metrics"
print(f"{what} overhead: {config} {extra}, {pairs} pairs of runs (off, on), median step per run")
print("  off (ms): " + " ".join(f"{1e3 * s:.1f}" for s in off))
print("  on  (ms): " + " ".join(f"{1e3 * s:.1f}" for s in on))
mean_off, mean_on = statistics.mean(off), statistics.mean(on)
spread = statistics.stdev(diff) if len(diff) > 1 else float("nan")
print(f"  mean off {1e3 * mean_off:.2f} ms, on {1e3 * mean_on:.2f} ms: on - off = "
      f"{100 * (mean_on - mean_off) / mean_off:+.2f}%; paired differences "
      f"{100 * statistics.mean(diff):+.2f}% +- {100 * spread:.2f}% (sd over pairs)")
print(f"  median of the paired differences {100 * statistics.median(diff):+.2f}%")
# Other processes only ever slow a run down, so each way's fastest run is its least disturbed.
best_off, best_on = min(off), min(on)
print(f"  fastest run off {1e3 * best_off:.2f} ms, on {1e3 * best_on:.2f} ms: "
      f"{100 * (best_on - best_off) / best_off:+.2f}%")
PY
