#!/usr/bin/env bash
# The metrics endpoint of a running single-process job: its first answer comes before the first
# step and already holds every family of `tandem-train --metrics-reference` with its series, and
# passes `promtool check metrics`, as does a scrape after some steps (with the loss the job
# printed, and the checkpoint of step 1 in the stall histogram); the targets file lists the
# endpoint; a port that is taken stops a job at startup with exit 2 naming
# monitoring.metrics_port, in one process and on every rank of a 2-rank job (rank 1's port taken:
# rank 0 names it).
# Usage: exposition_test.sh BIN_DIR MPIRUN [MPIRUN_ARGS...]   (run from the repository root)
set -u
bin=$1
shift
mpirun=("$@")
source "$(dirname "$0")/../multirank/torchrun_ranks.sh"
tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2> /dev/null; done
  wait 2> /dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  exit 1
}
scripts/prepare-data > /dev/null || fail "scripts/prepare-data"

# A port P with P + 1 free as well (a 2-rank job uses both).
free_port_pair() {
  local p hex _
  for _ in $(seq 100); do
    p=$(free_port 20000 31000) || return 1
    printf -v hex ':%04X ' $((p + 1))
    grep -qF "$hex" /proc/net/tcp /proc/net/tcp6 2> /dev/null || { echo "$p"; return 0; }
  done
  return 1
}
port=$(free_port_pair) || fail "no free port pair"

"$bin/tandem-train" --metrics-reference > "$tmp/reference.md"
# A rank's families: the reference's first table (the launcher's own come under their heading).
mapfile -t families < <(sed '/^## Served by tandem-launch/q' "$tmp/reference.md" |
  grep -oE '^\| `tandem_[a-z0-9_]+` \| [a-z]+' |
  sed -E 's/^\| `([a-z0-9_]+)` \| ([a-z]+)/\1 \2/')
[ "${#families[@]}" -ge 20 ] || fail "only ${#families[@]} families in --metrics-reference"

# Checks one scrape: promtool accepts it, every family has its TYPE line and a series.
check_exposition() {
  local file=$1 what=$2 name type first
  promtool check metrics < "$file" > "$tmp/promtool.txt" 2>&1 ||
    { cat "$tmp/promtool.txt"; fail "promtool check metrics refuses the $what scrape"; }
  for family in "${families[@]}"; do
    read -r name type <<< "$family"
    grep -qx "# TYPE $name $type" "$file" || fail "$what scrape: no '# TYPE $name $type'"
    first=$name
    [ "$type" = histogram ] && first=${name}_count
    grep -qE "^$first\{" "$file" || fail "$what scrape: $name has no series"
  done
  echo "ok: the $what scrape passes promtool check metrics and has all ${#families[@]} families"
}

# The first step of a batch this large takes seconds, so the first answer comes before it.
"$bin/tandem-train" examples/configs/tiny.toml --set train.steps=3 --set train.batch_size=256 \
  --set train.eval_interval=0 --set train.eval_batches=1 --set monitoring.metrics_port=$port \
  --set monitoring.sd_file="$tmp/targets.json" --set monitoring.job=exposition-test \
  --set checkpoint.dir="$tmp/ck" --set checkpoint.interval=1 > "$tmp/job.log" 2>&1 &
job=$!
pids+=($job)
for _ in $(seq 3000); do
  curl -sf "http://127.0.0.1:$port/metrics" -o "$tmp/first.txt" && break
  kill -0 $job 2> /dev/null || { cat "$tmp/job.log"; fail "the job ended before its endpoint answered"; }
  sleep 0.02
done
[ -s "$tmp/first.txt" ] || fail "the endpoint never answered"
grep -qE '^tandem_steps_total\{[^}]*\} 0$' "$tmp/first.txt" ||
  fail "the first answer came after a step: $(grep '^tandem_steps_total' "$tmp/first.txt")"
grep -qiE '^tandem_loss\{[^}]*\} nan$' "$tmp/first.txt" || fail "the loss is not NaN before a step"
check_exposition "$tmp/first.txt" "before-the-first-step"

# The endpoint is in the targets file, with its labels.
/usr/bin/python3 - "$tmp/targets.json" "$port" "$(hostname)" << 'PY' || fail "targets file"
import json, sys
targets = json.load(open(sys.argv[1]))
want = [{"targets": [f"127.0.0.1:{sys.argv[2]}"],
         "labels": {"job": "exposition-test", "rank": "0", "node": sys.argv[3]}}]
assert targets == want, f"targets file {targets}, wanted {want}"
PY
echo "ok: the targets file lists 127.0.0.1:$port with job, rank and node"

# A second job on the same port is refused at startup, naming the key.
out=$(timeout 60 "$bin/tandem-train" examples/configs/tiny.toml --set train.steps=1 \
  --set monitoring.metrics_port=$port 2>&1)
rc=$?
[ $rc -eq 2 ] || fail "a taken port: exit $rc, wanted 2: $out"
grep -q "^tandem-train: error: monitoring.metrics_port: cannot serve metrics on 127.0.0.1:$port: the port is in use" <<< "$out" ||
  fail "a taken port: $out"
echo "ok: a taken port -> $(grep error <<< "$out")"

# After a step: the loss there is the one the job printed for the step the scrape shows.
for _ in $(seq 3000); do
  grep -q "^step 2/3" "$tmp/job.log" && break
  sleep 0.02
done
curl -sf "http://127.0.0.1:$port/metrics" -o "$tmp/later.txt" || fail "no answer after a step"
wait $job || { cat "$tmp/job.log"; fail "the job failed"; }
check_exposition "$tmp/later.txt" "after-a-step"
step=$(sed -nE 's/^tandem_step\{[^}]*\} ([0-9]+)$/\1/p' "$tmp/later.txt")
loss=$(sed -nE 's/^tandem_loss\{[^}]*\} ([0-9.e+-]+)$/\1/p' "$tmp/later.txt")
printed=$(sed -nE "s/^step $step\/3 \| loss ([0-9.]+) .*/\1/p" "$tmp/job.log")
[ -n "$step" ] && [ -n "$printed" ] || fail "no step in the scrape ($step) or the log ($printed)"
[ "$(printf '%.4f' "$loss")" = "$printed" ] ||
  fail "tandem_loss $loss at step $step, the job printed $printed"
echo "ok: at step $step the scrape's loss $loss is the printed $printed"
# The checkpoint after step 1 cost the training thread its copy at that boundary.
grep -qE '^tandem_checkpoint_stall_seconds_count\{[^}]*\} [1-9]' "$tmp/later.txt" ||
  fail "no checkpoint stall observed after a checkpointing step: $(grep stall_seconds_count "$tmp/later.txt")"
echo "ok: the checkpoint of step 1 shows in tandem_checkpoint_stall_seconds"

# Two ranks, rank 1's port (port + 1) taken: both stop with exit 2, rank 0 naming rank 1.
/usr/bin/python3 -c "
import socket, sys, time
s = socket.socket(); s.bind(('127.0.0.1', $port + 1)); s.listen(1)
print('listening', flush=True); time.sleep(120)" > "$tmp/holder.log" &
pids+=($!)
for _ in $(seq 500); do grep -q listening "$tmp/holder.log" && break; sleep 0.02; done
out=$(OMP_NUM_THREADS=1 timeout 120 "${mpirun[@]}" -np 2 "$bin/tandem-train" \
  examples/configs/tiny.toml --set parallel.ep=2 --set train.steps=1 \
  --set monitoring.metrics_port=$port 2>&1)
rc=$?
[ $rc -eq 2 ] || fail "2 ranks, rank 1's port taken: exit $rc, wanted 2: $out"
grep -q "^tandem-train: error: monitoring.metrics_port: rank 1 cannot serve its metrics" <<< "$out" ||
  fail "rank 0 does not name rank 1: $out"
grep -q "cannot serve metrics on 127.0.0.1:$((port + 1)): the port is in use" <<< "$out" ||
  fail "rank 1 does not say why: $out"
echo "ok: 2 ranks with rank 1's port taken both exit 2, rank 0 naming rank 1"
echo "exposition_test: all passed"
