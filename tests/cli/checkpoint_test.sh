#!/usr/bin/env bash
# Checkpoints end to end, in one process: exact resume after kill -9 (bitwise the same losses as
# the uninterrupted run), SIGTERM (a checkpoint at the next step boundary, exit 4, resumed), a kill
# in the middle of a checkpoint write (the previous one loads), damaged checkpoints (a flipped
# byte, a truncated shard, a missing manifest, another model: each named with the file and the
# reason, and the next older one used), bad input, tandem-checkpoint verify and export (checked
# by a reader of the format written here, by xxhsum, and by Python's safetensors where installed).
# Usage: checkpoint_test.sh BUILD/bin [PYTHON]   (run from the repository root; PYTHON has
# safetensors and numpy, from scripts/python-test-env — required under CI=true)
set -euo pipefail
bin=$1
train=$bin/tandem-train
tool=$bin/tandem-checkpoint
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
scripts/prepare-data >/dev/null
fail() { echo "FAIL: $*" >&2; exit 1; }
py=/usr/bin/python3

# Slow enough (tens of ms a step) for the test to act between steps; one thread: bitwise repeatable.
small=(examples/configs/tiny.toml --set train.steps=40 --set train.eval_interval=20
  --set model.d_model=64 --set model.seq_len=64 --set train.batch_size=8 --set train.eval_batches=1
  --set train.threads=1 --set checkpoint.interval=10)

# Records of a --log-jsonl file as "step loss" lines (the loss as written: every digit).
losses() { $py -c '
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "loss" in r: print(r["step"], repr(r["loss"]))' "$1"; }

wait_for() {  # wait_for SECONDS CONDITION...: polls every 10 ms
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    [ $SECONDS -lt $deadline ] || fail "timed out waiting for: $*"
    sleep 0.01
  done
}

echo "== the uninterrupted run"
"$train" "${small[@]}" --set checkpoint.dir="$tmp/full" --log-jsonl "$tmp/full.jsonl" \
  > "$tmp/full.log" 2>&1 || { cat "$tmp/full.log"; fail "the uninterrupted run failed"; }
losses "$tmp/full.jsonl" > "$tmp/full.losses"
[ "$(wc -l < "$tmp/full.losses")" = 40 ] || fail "40 step records expected"
params=$(sed -nE 's/^model: ([0-9]+) parameters.*/\1/p' "$tmp/full.log")
[ -n "$params" ] || fail "no parameter count in the log"
ls "$tmp/full" | tr '\n' ' '; echo
[ "$(ls "$tmp/full")" = "$(printf 'step-00000020\nstep-00000030\nstep-00000040')" ] ||
  fail "checkpoint.keep = 3 should leave steps 20, 30, 40"

# The resumed records must be the uninterrupted run's, bit for bit, from the checkpoint on.
check_resumed() {  # check_resumed JSONL FIRST_STEP
  losses "$1" | $py -c '
import sys
full = dict(l.split() for l in open(sys.argv[1]))
records = [l.split() for l in sys.stdin]
steps = [int(s) for s, _ in records]
first = int(sys.argv[2]) + 1
# The killed attempt records 1..k, then the resumed one from the checkpoint step + 1.
# (k = 0 when only the resumed run wrote to the file).
k = 0 if steps[0] == first else next(
    (i for i in range(1, len(steps)) if steps[i] != steps[i - 1] + 1), first - 1)
assert steps == list(range(1, k + 1)) + list(range(first, 41)), f"steps {steps}"
bad = [(s, l, full[s]) for s, l in records if full[s] != l]
assert not bad, f"losses differ from the uninterrupted run: {bad[:3]}"
print(f"resumed steps {first}..40 equal the uninterrupted run bit for bit")' "$tmp/full.losses" "$2"
}

echo "== kill -9 after step 20's checkpoint, then --resume auto"
"$train" "${small[@]}" --set checkpoint.dir="$tmp/kill" --log-jsonl "$tmp/kill.jsonl" \
  > "$tmp/kill.log" 2>&1 &
pids+=($!)
wait_for 120 test -d "$tmp/kill/step-00000020"
kill -9 "${pids[-1]}"
wait "${pids[-1]}" 2>/dev/null || true
last=$(tail -n1 "$tmp/kill.jsonl" | $py -c 'import json,sys; print(json.load(sys.stdin)["step"])')
echo "killed after step $last"
[ "$last" -lt 40 ] || fail "the run finished before it could be killed"
"$train" "${small[@]}" --set checkpoint.dir="$tmp/kill" --log-jsonl "$tmp/kill.jsonl" \
  --resume auto > "$tmp/resume.log" 2>&1 || { cat "$tmp/resume.log"; fail "resume failed"; }
grep -q "resuming from checkpoint $tmp/kill/step-00000020 (step 20)" "$tmp/resume.log" ||
  { cat "$tmp/resume.log"; fail "did not resume from step 20"; }
check_resumed "$tmp/kill.jsonl" 20

echo "== SIGTERM: a checkpoint at the next step boundary, exit 4, then resumed"
"$train" "${small[@]}" --set checkpoint.interval=0 --set checkpoint.dir="$tmp/term" \
  --log-jsonl "$tmp/term.jsonl" > "$tmp/term.log" 2>&1 &
pids+=($!)
wait_for 120 bash -c "[ -s '$tmp/term.jsonl' ] && [ \$(wc -l < '$tmp/term.jsonl') -ge 5 ]"
kill -TERM "${pids[-1]}"
code=0; wait "${pids[-1]}" || code=$?
[ "$code" = 4 ] || { cat "$tmp/term.log"; fail "SIGTERM: exit $code, expected 4"; }
stopped=$(sed -nE 's/.*stopped on request \(SIGTERM\) after step ([0-9]+).*/\1/p' "$tmp/term.log")
[ -n "$stopped" ] && [ -d "$tmp/term/$(printf 'step-%08d' "$stopped")" ] ||
  { cat "$tmp/term.log"; fail "no checkpoint of the step it stopped at"; }
echo "stopped after step $stopped with its checkpoint"
"$train" "${small[@]}" --set checkpoint.interval=0 --set checkpoint.dir="$tmp/term" \
  --log-jsonl "$tmp/term.jsonl" --resume auto > "$tmp/term2.log" 2>&1 ||
  { cat "$tmp/term2.log"; fail "resume after SIGTERM failed"; }
check_resumed "$tmp/term.jsonl" "$stopped"

echo "== kill -9 in the middle of step 20's checkpoint: step 10's loads"
TANDEM_TEST_CHECKPOINT_PAUSE=20:60 "$train" "${small[@]}" --set checkpoint.dir="$tmp/mid" \
  > "$tmp/mid.log" 2>&1 &
pids+=($!)
wait_for 120 grep -q "pausing 60 s half-way" "$tmp/mid.log"
kill -9 "${pids[-1]}"
wait "${pids[-1]}" 2>/dev/null || true
[ ! -e "$tmp/mid/step-00000020" ] || fail "a half-written checkpoint took the final name"
ls -a "$tmp/mid" | grep -q '^\.step-00000020\.tmp-' || fail "no temporary directory was left"
"$train" "${small[@]}" --set checkpoint.dir="$tmp/mid" --log-jsonl "$tmp/mid.jsonl" \
  --resume auto > "$tmp/mid2.log" 2>&1 || { cat "$tmp/mid2.log"; fail "resume failed"; }
grep -q "resuming from checkpoint $tmp/mid/step-00000010 (step 10)" "$tmp/mid2.log" ||
  fail "did not resume from step 10"
grep -q "removed $tmp/mid/.step-00000020.tmp-" "$tmp/mid2.log" || fail "the stale temp dir stayed"
check_resumed "$tmp/mid.jsonl" 10

echo "== damaged checkpoints are named, and the next older one is used"
cp -r "$tmp/full" "$tmp/bad"
shard40=$tmp/bad/step-00000040/rank-00000.safetensors
$py -c '
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[len(b) // 2] ^= 0x10
open(p, "wb").write(b)' "$shard40"
more=(--set train.steps=50 --set checkpoint.dir="$tmp/bad" --resume auto)
"$train" "${small[@]}" "${more[@]}" > "$tmp/bad.log" 2>&1 || { cat "$tmp/bad.log"; fail "fallback failed"; }
grep -q "checkpoint $tmp/bad/step-00000040 cannot be used: checkpoint shard '$shard40': XXH64 checksum" \
  "$tmp/bad.log" || { cat "$tmp/bad.log"; fail "the flipped byte was not named"; }
grep -q "resuming from checkpoint $tmp/bad/step-00000030 (step 30)" "$tmp/bad.log" || fail "no fallback to 30"
rm -rf "$tmp/bad" && cp -r "$tmp/full" "$tmp/bad"
shard30=$tmp/bad/step-00000030/rank-00000.safetensors
$py -c '
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[len(b) // 2] ^= 0x10
open(p, "wb").write(b)' "$tmp/bad/step-00000040/rank-00000.safetensors"
truncate -s 1000 "$shard30"
rm "$tmp/bad/step-00000020/manifest.json"
code=0; "$train" "${small[@]}" "${more[@]}" > "$tmp/bad.log" 2>&1 || code=$?
[ "$code" = 2 ] || { cat "$tmp/bad.log"; fail "no usable checkpoint: exit $code, expected 2"; }
grep -q "no checkpoint in '$tmp/bad' can be used" "$tmp/bad.log" || fail "no summary of the failures"
grep -q "$shard30': 1000 bytes, the manifest records" "$tmp/bad.log" || fail "truncation not named"
grep -q "step-00000020/manifest.json': does not exist" "$tmp/bad.log" || fail "missing manifest not named"
code=0; "$tool" verify "$tmp/bad" > "$tmp/verify.log" 2>&1 || code=$?
cat "$tmp/verify.log"
[ "$code" = 1 ] && [ "$(grep -c INVALID "$tmp/verify.log")" = 3 ] || fail "verify: exit $code"
code=0; "$train" "${small[@]}" --set model.d_model=32 --set checkpoint.dir="$tmp/full" --resume \
  "$tmp/full/step-00000040" > "$tmp/other.log" 2>&1 || code=$?
[ "$code" = 2 ] && grep -q "is of another model: model.d_model = 64 there, 32 here" "$tmp/other.log" ||
  { cat "$tmp/other.log"; fail "another model: exit $code"; }

echo "== hand-edited manifests are refused by resume and by verify alike"
edit_manifest() {  # edit_manifest CHECKPOINT PYTHON-STATEMENT (on m, the manifest)
  $py -c '
import json, sys
p = sys.argv[1] + "/manifest.json"; m = json.load(open(p)); exec(sys.argv[2]); json.dump(m, open(p, "w"))' "$1" "$2"
}
for case in "m['step'] = 39|records step 39 but its directory is step-00000040" \
    "m['shards'][0]['tensors'].append(dict(m['shards'][0]['tensors'][0]))|is saved twice over" \
    "m['parameters']['zzz'] = [4294967296, 4294967296]|is too large" \
    "m['router_biases'] = {}|0 router biases, the model has 3 MoE layers"; do
  rm -rf "$tmp/edit" && mkdir "$tmp/edit" && cp -r "$tmp/full/step-00000040" "$tmp/edit/"
  edit_manifest "$tmp/edit/step-00000040" "${case%%|*}"
  code=0; "$train" "${small[@]}" --set checkpoint.dir="$tmp/edit2" --resume "$tmp/edit/step-00000040" \
    > "$tmp/edit.log" 2>&1 || code=$?
  [ "$code" = 2 ] && grep -q -- "${case#*|}" "$tmp/edit.log" || { cat "$tmp/edit.log"; fail "resume accepted: ${case%%|*}"; }
  code=0; "$tool" verify "$tmp/edit" > "$tmp/edit.log" 2>&1 || code=$?
  [ "$code" = 1 ] && grep -q -- "${case#*|}" "$tmp/edit.log" || { cat "$tmp/edit.log"; fail "verify accepted: ${case%%|*}"; }
  echo "refused: ${case%%|*}"
done

echo "== one job per directory; a fresh run does not write over checkpoints; a rollback moves newer ones aside"
code=0; "$train" "${small[@]}" --set checkpoint.dir="$tmp/full" > "$tmp/fresh.log" 2>&1 || code=$?
[ "$code" = 2 ] && grep -q "already holds checkpoints (the newest is $tmp/full/step-00000040)" "$tmp/fresh.log" ||
  { cat "$tmp/fresh.log"; fail "a fresh run in a directory of checkpoints: exit $code"; }
TANDEM_TEST_CHECKPOINT_PAUSE=10:60 "$train" "${small[@]}" --set checkpoint.dir="$tmp/locked" \
  > "$tmp/locked.log" 2>&1 &
pids+=($!)
wait_for 120 grep -q "pausing 60 s half-way" "$tmp/locked.log"
code=0; "$train" "${small[@]}" --set checkpoint.dir="$tmp/locked" --resume auto > "$tmp/second.log" 2>&1 || code=$?
kill -9 "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
[ "$code" = 2 ] && grep -q "checkpoint.dir '$tmp/locked' is in use by another job (pid [0-9]* on " "$tmp/second.log" ||
  { cat "$tmp/second.log"; fail "a second job on the same directory: exit $code"; }
ls -a "$tmp/locked" | grep -q '^\.step-00000010\.tmp-' || fail "the second job removed the first one's checkpoint in progress"
cp -r "$tmp/full" "$tmp/roll"
mkdir "$tmp/roll/step-99999999"  # not a checkpoint (no manifest): neither counted nor removed
"$train" "${small[@]}" --set checkpoint.dir="$tmp/roll" --set checkpoint.keep=1 \
  --resume "$tmp/roll/step-00000020" > "$tmp/roll.log" 2>&1 || { cat "$tmp/roll.log"; fail "rollback failed"; }
grep -q "step-00000030 is newer than the checkpoint this run resumed from; moved to $tmp/roll/abandoned-" \
  "$tmp/roll.log" || { cat "$tmp/roll.log"; fail "the newer checkpoints were not moved aside"; }
# keep = 1: of this run's checkpoints (30 and 40) only 40 stays, with the old 20 gone; the junk stays.
[ "$(cd "$tmp/roll" && ls -d step-* | tr '\n' ' ')" = "step-00000040 step-99999999 " ] &&
  [ "$(cd "$tmp/roll" && ls abandoned-* | tr '\n' ' ')" = "step-00000030 step-00000040 " ] ||
  { ls -R "$tmp/roll"; fail "after the rollback with keep=1"; }
grep -q "resuming from checkpoint $tmp/roll/step-00000020 (step 20)" "$tmp/roll.log" || fail "rollback"

echo "== a checkpoint that cannot be written is an error, not a success"
if mkdir -p "$tmp/small-fs" && mount -t tmpfs -o size=12m tmpfs "$tmp/small-fs" 2>/dev/null; then
  code=0; "$train" "${small[@]}" --set checkpoint.dir="$tmp/small-fs/ck" > "$tmp/full-fs.log" 2>&1 || code=$?
  umount "$tmp/small-fs"
  [ "$code" = 1 ] && grep -q "the checkpoint of step 40 could not be written (see above); the newest complete one is step 10" \
    "$tmp/full-fs.log" || { cat "$tmp/full-fs.log"; fail "a full filesystem: exit $code"; }
  grep -q "checkpoint $tmp/small-fs/ck/step-00000020 was not written: .*No space left on device" "$tmp/full-fs.log" ||
    fail "the failed write was not named"
  echo "full filesystem: exit 1, the newest complete checkpoint named"
else
  [ "${CI:-}" != true ] || fail "cannot mount a small tmpfs (CI runs as root)"
  echo "note: not root: the full-filesystem case needs a small tmpfs and was not run"
fi

echo "== bad input"
expect_usage() {  # expect_usage PATTERN ARGS...
  local pattern=$1; shift
  code=0; "$train" "$@" > "$tmp/usage.log" 2>&1 || code=$?
  [ "$code" = 2 ] && grep -q -- "$pattern" "$tmp/usage.log" ||
    { cat "$tmp/usage.log"; fail "expected exit 2 and '$pattern', got exit $code"; }
}
expect_usage "--resume auto reads checkpoint.dir, which is not set" "${small[@]}" \
  --set checkpoint.interval=0 --resume auto
expect_usage "checkpoint.interval = 10 needs checkpoint.dir" "${small[@]}"
touch "$tmp/a-file"
expect_usage "checkpoint.dir '$tmp/a-file': cannot be created or is not a directory" "${small[@]}" \
  --set checkpoint.dir="$tmp/a-file"
expect_usage "--resume $tmp/nothing-here: no checkpoint there" "${small[@]}" \
  --set checkpoint.dir="$tmp/x" --resume "$tmp/nothing-here"

echo "== verify and export"
"$tool" verify "$tmp/full" | tee "$tmp/verify.log"
[ "$(grep -c ': valid: ' "$tmp/verify.log")" = 3 ] || fail "verify of good checkpoints"
manifest=$tmp/full/step-00000040/manifest.json
recorded=$($py -c 'import json,sys; print(json.load(open(sys.argv[1]))["shards"][0]["xxh64"])' "$manifest")
computed=$(xxhsum -H1 "$tmp/full/step-00000040/rank-00000.safetensors" | cut -d' ' -f1)
[ "$recorded" = "$computed" ] || fail "manifest XXH64 $recorded, xxhsum says $computed"
"$tool" export "$tmp/full" "$tmp/model.safetensors"
"$tool" export "$tmp/full" "$tmp/model-bf16.safetensors" --dtype bf16
# A reader of the format written from its definition: header, dtypes, offsets tiling the data.
$py - "$tmp/model.safetensors" "$tmp/model-bf16.safetensors" "$params" \
  "$tmp/full/step-00000040/rank-00000.safetensors" <<'PY'
import json, struct, sys
def read(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    assert (8 + n) % 8 == 0, "data not 8-aligned"
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    size = {"F32": 4, "BF16": 2, "F64": 8}
    at = 0
    for name, t in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        b, e = t["data_offsets"]
        count = 1
        for d in t["shape"]: count *= d
        assert b == at and e - b == count * size[t["dtype"]], (name, t)
        at = e
    assert 8 + n + at == len(data), "tensors do not tile the data"
    return header, meta, data[8 + n:]
f32, meta, f32_data = read(sys.argv[1])
bf16, _, bf16_data = read(sys.argv[2])
shard, _, shard_data = read(sys.argv[4])
count = sum(eval("*".join(map(str, t["shape"])) or "1") for t in f32.values())
assert count == int(sys.argv[3]), f"exported {count} elements, tandem-train printed {sys.argv[3]}"
assert not any("router_bias" in k or "optimizer" in k for k in f32), "non-parameters exported"
assert all(t["dtype"] == "F32" for t in f32.values()) and all(t["dtype"] == "BF16" for t in bf16.values())
assert meta.get("format") == "pt"
# One process saves every parameter whole: the export's bytes are the shard's.
for name, t in f32.items():
    b, e = t["data_offsets"]; sb, se = shard[name]["data_offsets"]
    assert f32_data[b:e] == shard_data[sb:se], name
    # bf16 is the top half of the fp32, rounded to nearest even.
    vals = struct.unpack(f"<{(e - b) // 4}I", f32_data[b:e])
    bb, be = bf16[name]["data_offsets"]
    halves = struct.unpack(f"<{(be - bb) // 2}H", bf16_data[bb:be])
    for v, h in zip(vals[:64], halves[:64]):
        r = (v + 0x7fff + ((v >> 16) & 1)) >> 16
        assert h == r, (name, hex(v), hex(h), hex(r))
print(f"export: {len(f32)} tensors, {count} parameters, F32 bytes equal the checkpoint's, BF16 rounded to nearest even")
PY
stpy=${2:-}
if [ -n "$stpy" ] && [ -x "$stpy" ] && "$stpy" -c "import safetensors.numpy" 2>/dev/null; then
  "$stpy" -c '
import sys, safetensors.numpy as st
t = st.load_file(sys.argv[1])
n = sum(v.size for v in t.values())
assert n == int(sys.argv[2]), n
print(f"Python safetensors loads the export: {len(t)} tensors, {n} parameters")' \
    "$tmp/model.safetensors" "$params"
elif [ "${CI:-}" = true ]; then
  fail "Python with safetensors ('$stpy') is missing: scripts/python-test-env makes it"
else
  echo "note: no Python with safetensors ('$stpy'; scripts/python-test-env makes it): the format was checked by the reader above only"
fi
code=0; "$tool" export "$tmp/full" "$tmp" > /dev/null 2>&1 || code=$?
[ "$code" = 2 ] || fail "export over a directory must be refused (exit 2), got $code"
code=0; "$tool" export "$tmp/full/step-00000040" "$tmp/full/step-00000040/manifest.json" > "$tmp/x.log" 2>&1 || code=$?
[ "$code" = 2 ] && grep -q "is inside the checkpoint" "$tmp/x.log" || fail "export into its own checkpoint: exit $code"
"$tool" verify "$tmp/full/step-00000040" > /dev/null || fail "the refused export damaged the checkpoint"
echo "checkpoint_test: all cases passed"
