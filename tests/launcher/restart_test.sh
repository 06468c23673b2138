#!/usr/bin/env bash
# Fault tolerance end to end under tandem-launch: 4 ranks (pp 2 × dp 2, DualPipe, ep 2, ZeRO-1)
# write a checkpoint every 5 steps; kill -9 hits a random rank at a random step, twice (random
# seed printed; TANDEM_TEST_SEED repeats a run). The job must finish by itself, each restarted
# attempt resuming from the newest complete checkpoint, losing at most the steps since it, and
# every loss it logs must equal the uninterrupted run's bit for bit. No process of the job may
# outlive the launcher. The restart phase times (stop, join, load, first step) are printed from
# the launcher's records and the ranks' resume records. Then SIGTERM to tandem-launch: every rank
# checkpoints at the next step boundary, the launcher exits 4, and the same command resumes.
# Usage: restart_test.sh BUILD/bin   (run from the repository root)
set -euo pipefail
bin=$(realpath "$1")
tmp=$(mktemp -d)
launcher_pid=""
cleanup() {
  [ -z "$launcher_pid" ] || kill -9 "$launcher_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
scripts/prepare-data >/dev/null
fail() { echo "FAIL: $*" >&2; exit 1; }
py=/usr/bin/python3
seed=${TANDEM_TEST_SEED:-$RANDOM}
echo "seed $seed (TANDEM_TEST_SEED=$seed repeats this run)"
RANDOM=$seed

steps=30
job=(examples/configs/tiny.toml --set train.log_interval=1 --set train.steps=$steps --set train.eval_interval=0
  --set model.d_model=64 --set model.seq_len=32 --set train.batch_size=8 --set train.eval_batches=1
  --set train.threads=1 --set parallel.pp=2 --set parallel.ep=2 --set parallel.schedule=dualpipe
  --set parallel.microbatches=4 --set parallel.zero1=true --set checkpoint.interval=5
  --set comm.timeout_s=20)
port() { $py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "== the uninterrupted run"
"$bin/tandem-launch" --nproc-per-node 4 --master-port "$(port)" -- "$bin/tandem-train" "${job[@]}" \
  --set checkpoint.dir="$tmp/ref" --log-jsonl "$tmp/ref.jsonl" > "$tmp/ref.log" 2>&1 ||
  { cat "$tmp/ref.log"; fail "the uninterrupted run failed"; }

# The pid of rank $1 of attempt $2 of run $3, found by its environment.
rank_pid() {
  for d in /proc/[0-9]*; do
    env=$(tr '\0' '\n' 2>/dev/null < "$d/environ") || continue
    if grep -qx "TANDEM_RUN_ID=$3" <<< "$env" && grep -qx "RANK=$1" <<< "$env" &&
      grep -qx "TANDEM_RESTART_COUNT=$2" <<< "$env" && [ "$(cat "$d/comm" 2>/dev/null)" = tandem-train ]; then
      echo "${d#/proc/}"; return 0
    fi
  done
  return 1
}
# The newest step record of attempt $1 in the per-step log ${2:-kill.jsonl} (0 when none yet).
newest_step() {
  local log=$tmp/${2:-kill.jsonl}
  [ -s "$log" ] || { echo 0; return; }
  $py -c '
import json, sys
steps = [r["step"] for r in map(json.loads, open(sys.argv[1])) if "loss" in r and r["restart"] == int(sys.argv[2])]
print(max(steps, default=0))' "$log" "$1"
}

echo "== kill -9 twice"
run_id=restart-test-$seed-$$
kill_steps=($((3 + RANDOM % 7)) $((13 + RANDOM % 5)))
kill_ranks=($((RANDOM % 4)) $((RANDOM % 4)))
# Rank 0 sleeps 40 ms at each step's start (the others wait for it at the boundary): the steps
# between the second kill's target and the last one then take over half a second, which the
# polling below (a Python start per poll) cannot miss on a loaded machine, as it once did at
# -j2 (the job finished before the kill). Sleeping changes no loss.
TANDEM_TEST_SLOW_RANK=0:40 TANDEM_RUN_ID=$run_id "$bin/tandem-launch" --nproc-per-node 4 --master-port "$(port)" \
  --max-restarts 3 --log-dir "$tmp/logs" -- "$bin/tandem-train" "${job[@]}" \
  --set checkpoint.dir="$tmp/kill" --log-jsonl "$tmp/kill.jsonl" > "$tmp/kill.log" 2>&1 &
launcher_pid=$!
for attempt in 0 1; do
  target=${kill_steps[$attempt]} rank=${kill_ranks[$attempt]}
  deadline=$((SECONDS + 120))
  until [ "$(newest_step $attempt)" -ge "$target" ]; do
    [ $SECONDS -lt $deadline ] || { cat "$tmp/kill.log"; fail "attempt $attempt never reached step $target"; }
    kill -0 "$launcher_pid" 2>/dev/null || { cat "$tmp/kill.log"; fail "the launcher exited early"; }
    sleep 0.01
  done
  pid=$(rank_pid "$rank" "$attempt" "$run_id") || fail "rank $rank of attempt $attempt not found"
  kill -9 "$pid"
  echo "attempt $attempt: killed rank $rank (pid $pid) after step $(newest_step $attempt)"
  echo "$attempt $(newest_step $attempt)" >> "$tmp/kills"
done
code=0; wait "$launcher_pid" || code=$?
launcher_pid=""
[ "$code" = 0 ] || { cat "$tmp/kill.log"; fail "the job did not finish: exit $code"; }
left=$(grep -l "TANDEM_RUN_ID=$run_id" /proc/[0-9]*/environ 2>/dev/null || true)
[ -z "$left" ] || fail "processes of the job outlived the launcher: $left"

$py - "$tmp" "$steps" <<'PY'
import json, sys
d, steps = sys.argv[1], int(sys.argv[2])
ref = {r["step"]: r["loss"] for r in map(json.loads, open(f"{d}/ref.jsonl")) if "loss" in r}
records = [r for r in map(json.loads, open(f"{d}/kill.jsonl")) if "loss" in r]
kills = dict(tuple(map(int, l.split())) for l in open(f"{d}/kills"))
for attempt in sorted({r["restart"] for r in records}):
    mine = [r["step"] for r in records if r["restart"] == attempt]
    first, last = mine[0], mine[-1]
    assert mine == list(range(first, last + 1)), (attempt, mine)
    if attempt == 0:
        assert first == 1
    else:
        # Resumed from a checkpoint (every 5 steps), losing at most the steps since it (plus the
        # step whose boundary commits it: the write is asynchronous).
        killed_after = kills[attempt - 1]
        assert (first - 1) % 5 == 0 and killed_after - (first - 1) <= 6, (attempt, first, killed_after)
        print(f"attempt {attempt}: resumed at step {first} (killed after step {killed_after})")
assert records[-1]["step"] == steps and max(r["restart"] for r in records) == 2
bad = [(r["step"], r["restart"], r["loss"], ref[r["step"]]) for r in records if r["loss"] != ref[r["step"]]]
assert not bad, f"losses differ from the uninterrupted run: {bad[:3]}"
print(f"{len(records)} step records over 3 attempts equal the uninterrupted run bit for bit")
for attempt in (0, 1):
    a = json.load(open(f"{d}/logs/attempt-{attempt}.json"))
    r = json.load(open(f"{d}/logs/resume-{attempt + 1}.json"))
    assert a["failed_rank"] in range(4) and a["restarting"], a
    print(f"restart {attempt + 1}: rank {a['failed_rank']} {a['cause']} {a['detect_seconds']:.3f} s "
          f"into the attempt; phases: survivors stopped in {a['stop_seconds']:.3f} s, then start to joined "
          f"{r['start_to_joined_seconds']:.3f} s, load {r['load_seconds']:.3f} s, first step "
          f"{r['first_step_seconds']:.3f} s (start to first step {r['start_to_first_step_seconds']:.3f} s)")
PY
echo "== SIGTERM to tandem-launch: every rank checkpoints at the next step boundary, exit 4; the same command resumes"
term=("$bin/tandem-launch" --nproc-per-node 4 --master-port "$(port)" -- "$bin/tandem-train" "${job[@]}"
  --set checkpoint.interval=0 --set checkpoint.dir="$tmp/term" --log-jsonl "$tmp/term.jsonl")
"${term[@]}" > "$tmp/term.log" 2>&1 &
launcher_pid=$!
deadline=$((SECONDS + 120))
until [ "$(newest_step 0 term.jsonl)" -ge 4 ]; do
  [ $SECONDS -lt $deadline ] || { cat "$tmp/term.log"; fail "the job never reached step 4"; }
  sleep 0.01
done
kill -TERM "$launcher_pid"
code=0; wait "$launcher_pid" || code=$?
launcher_pid=""
[ "$code" = 4 ] || { cat "$tmp/term.log"; fail "tandem-launch after SIGTERM: exit $code, expected 4"; }
stopped=$(sed -nE 's/.*stopped on request \(SIGTERM\) after step ([0-9]+).*/\1/p' "$tmp/term.log")
[ -n "$stopped" ] && [ -d "$tmp/term/$(printf 'step-%08d' "$stopped")" ] ||
  { cat "$tmp/term.log"; fail "no checkpoint of the step the job stopped at"; }
"${term[@]}" > "$tmp/term2.log" 2>&1 || { cat "$tmp/term2.log"; fail "the same command did not resume"; }
$py - "$tmp" "$stopped" "$steps" <<'PY'
import json, sys
d, stopped, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ref = {r["step"]: r["loss"] for r in map(json.loads, open(f"{d}/ref.jsonl")) if "loss" in r}
got = [r for r in map(json.loads, open(f"{d}/term.jsonl")) if "loss" in r]
assert [r["step"] for r in got] == list(range(1, stopped + 1)) + list(range(stopped + 1, steps + 1)), [r["step"] for r in got]
bad = [r for r in got if r["loss"] != ref[r["step"]]]
assert not bad, bad[:2]
print(f"stopped after step {stopped} (exit 4), resumed by the same command: steps 1..{steps} equal the uninterrupted run bit for bit")
PY
echo "restart_test: passed"
