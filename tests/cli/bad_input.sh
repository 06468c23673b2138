#!/usr/bin/env bash
# tandem-train refuses bad input with a clear message and a non-zero exit, and writes nothing; it
# writes only regular files, never touches what is not its own, and keeps a finished run's summary
# when the file cannot be written.
# Usage: bad_input.sh PATH/TO/tandem-train   (run from the repository root)
set -u
train=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
cfg=examples/configs/tiny.toml

# expect_error "what the message must contain" args...; with want_rc=2 set, only exit 2 (refused
# before any work) passes. Every run is bounded: input that makes tandem-train block is a failure.
want_rc=""
expect_error() {
  local want=$1
  shift
  local out rc
  out=$(timeout 60 "$train" --summary-json "$tmp/summary.json" "$@" 2>&1)
  rc=$?
  if [ -n "$want_rc" ] && [ $rc -ne "$want_rc" ]; then
    echo "FAIL: exit $rc (wanted $want_rc) for: $*"; echo "  got: $out"; failures=$((failures + 1))
  elif [ $rc -ne 1 ] && [ $rc -ne 2 ]; then  # 0 is success, 124 a hang; anything else is a crash
    echo "FAIL: exit $rc for: $*"; echo "  got: $out"; failures=$((failures + 1))
  elif ! grep -q "^tandem-train: error: " <<<"$out"; then
    echo "FAIL: no 'tandem-train: error:' line for: $*"; echo "  got: $out"; failures=$((failures + 1))
  elif ! grep -qF -- "$want" <<<"$out"; then
    echo "FAIL: message for: $*"; echo "  wanted: $want"; echo "  got:    $out"; failures=$((failures + 1))
  elif [ -e "$tmp/summary.json" ]; then
    echo "FAIL: a summary was written for: $*"; failures=$((failures + 1))
  else
    echo "ok: $* -> $(head -n1 <<<"$out")"
  fi
}

printf '[model]\nd_modle = 64\n' > "$tmp/typo.toml"
printf '[model\n' > "$tmp/syntax.toml"
printf 'odd' > "$tmp/odd.bin"
printf 'odd' > "$tmp/odd_val.bin"

expect_error "no config file given"
expect_error "config file '$tmp/none.toml': does not exist; give a TOML file" "$tmp/none.toml"
expect_error "$tmp/syntax.toml:1" "$tmp/syntax.toml"
expect_error "unknown configuration key 'model.d_modle'; did you mean 'model.d_model'?" "$tmp/typo.toml"
expect_error "did you mean 'train.steps'?" $cfg --set train.step=3
expect_error "--set train.steps: value 'many' is not an integer" $cfg --set train.steps=many
expect_error "model.n_heads = 3 does not divide model.d_model = 128" $cfg --set model.n_heads=3
expect_error 'comm.expert_exchange = "memory" is not one of "auto", "shared_memory", "messages"' $cfg \
  --set comm.expert_exchange=memory
expect_error "model.top_k = 9 must be between 1 and model.n_routed_experts = 8" $cfg --set model.top_k=9
expect_error "train.batch_size = 0: must be in [1, 2^24 = 16777216]" $cfg --set train.batch_size=0
expect_error "data.path '/nonexistent/kjv.txt': does not exist; for the default corpus run scripts/prepare-data" \
  $cfg --set data.path=/nonexistent/kjv.txt
expect_error "data.path '/tmp': is a directory, not a regular file" $cfg --set data.path=/tmp
expect_error "not a whole number of uint16 tokens" $cfg --set data.format=uint16 \
  --set data.path="$tmp/odd.bin" --set data.val_path="$tmp/odd_val.bin"
expect_error "unknown option '--step'" $cfg --step 3
expect_error "config file 'examples/configs': is a directory, not a regular file" examples/configs
expect_error "--summary-json '/nonexistent/s.json': its directory '/nonexistent' does not exist" $cfg \
  --summary-json /nonexistent/s.json
# train.device = cuda where it cannot be had (this machine: no GPU, or a build without CUDA) is
# exit 2 saying so, never a quiet CPU run; what the CUDA step cannot take is refused before that.
want_rc=2 expect_error 'train.device = "cuda"' "$cfg" --set train.device=cuda
want_rc=2 expect_error 'train.device = "cuda" needs model.dtype = "fp32", got "fp64"' "$cfg" \
  --set train.device=cuda --set model.dtype=fp64
want_rc=2 expect_error 'routes at most model.top_k = 32 experts' "$cfg" --set train.device=cuda \
  --set model.n_routed_experts=64 --set model.top_k=33
want_rc=2 expect_error 'is not one of "cpu", "cuda"' "$cfg" --set train.device=gpu
# The expert exchanges that stage rows in host memory are refused on the GPU as such, before
# whether a GPU is there; a pipeline grid gets as far as the missing GPU.
want_rc=2 expect_error 'comm.dispatch = "hierarchical" stages expert rows in host shared memory, but train.device = "cuda" keeps them on the GPU (parallel.ep = 2 over 1 ranks); set comm.dispatch = "flat"' \
  "$cfg" --set train.device=cuda --set parallel.ep=2 --set comm.dispatch=hierarchical
want_rc=2 expect_error 'comm.expert_exchange = "shared_memory" moves expert rows through host memory, but train.device = "cuda" keeps them on the GPU' \
  "$cfg" --set train.device=cuda --set parallel.ep=2 --set comm.expert_exchange=shared_memory
want_rc=2 expect_error 'train.device = "cuda" cannot be used here' "$cfg" --set train.device=cuda \
  --set parallel.pp=2
# Grids are refused before any rank talks to another (a torchrun-style environment of 3 ranks).
expect_error "parallel.pp = 2 needs a multiple of 2 ranks, but this process runs alone" $cfg --set parallel.pp=2
expect_error "parallel.schedule = \"dualpipe2\" is not one of \"1f1b\", \"zb-h1\", \"dualpipe\", \"dualpipev\"; did you mean \"dualpipe\"?" $cfg --set parallel.schedule=dualpipe2
train_plain=$train
expect_grid() { local want=$1; shift; train=$train_plain; RANK=0 WORLD_SIZE=3 LOCAL_RANK=0 LOCAL_WORLD_SIZE=3 MASTER_ADDR=127.0.0.1 MASTER_PORT=1 expect_error "$want" "$@"; }
expect_grid "world of 3 ranks is not divisible by parallel.pp = 2" $cfg --set parallel.pp=2
expect_grid "parallel.ep = 2 does not divide the data-parallel size dp = world 3 / pp 1 = 3" $cfg --set parallel.ep=2
expect_grid "train.batch_size = 16 sequences do not split evenly over dp = 3" $cfg
train=$train_plain

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# Sizes whose products would overflow, and numbers outside their key's range, are refused before
# any work (exit 2) with the key and the limit.
want_rc=2
expect_error "train.batch_size = 144115188075855872: must be in [1, 2^24 = 16777216]" $cfg \
  --set train.batch_size=144115188075855872
expect_error "model.vocab_size = 144115188075855872: must be in [1, 2^31 = 2147483648]" $cfg \
  --set model.vocab_size=144115188075855872
expect_error "train.batch_size * model.seq_len = 16 * 9223372036854775807 (the tokens of a step) is more than 2^44 = 17592186044416 elements" \
  $cfg --set model.seq_len=9223372036854775807
expect_error "train.batch_size * model.seq_len * model.vocab_size = 16777216 * 128 * 2147483648 (the logits of a step) = 4611686018427387904 is more than 2^44" \
  $cfg --set train.batch_size=16777216 --set model.vocab_size=2147483648
expect_error "3 * model.d_model * model.d_model = 3 * 4294967296 * 4294967296 (the fused q, k, v weight) is more than 2^44" \
  $cfg --set model.d_model=4294967296
expect_error "model: the parameters come to 1594367999880320, more than 2^44" $cfg --set model.n_layers=4000000000
expect_error "train.lr = inf: must be in (0, 1]" $cfg --set train.lr=inf
expect_error "train.lr = nan: must be in (0, 1]" $cfg --set train.lr=nan
expect_error "model.norm_eps = inf: must be in (0, 0.1]" $cfg --set model.norm_eps=inf
expect_error "train.adam_eps = inf: must be in (0, 1]" $cfg --set train.adam_eps=inf
expect_error "model.router_bias_update_rate = nan: must be in [0, 1]" $cfg --set model.router_bias_update_rate=nan
expect_error "model.router_bias_update_rate = -1e+30: must be in [0, 1]" $cfg \
  --set model.router_bias_update_rate=-1e30
# 25 days of milliseconds overflowed an int; the range ends at a day.
expect_error "comm.timeout_s = 2.16e+06: must be in [0.01, 86400]" $cfg --set comm.timeout_s=2160000
# Timeouts out of order (collective < rendezvous) are refused with the numbers and the key to
# change; the launcher's heartbeat between them is tested under tandem-launch.
expect_error "comm.timeout_s = 700 s is not below comm.rendezvous_timeout_s = 600 s" $cfg \
  --set comm.timeout_s=700
expect_error "Set comm.rendezvous_timeout_s above 5, or lower comm.timeout_s" $cfg \
  --set comm.rendezvous_timeout_s=5 --set comm.timeout_s=5
expect_error "comm.rendezvous_timeout_s = 1e+06: must be in [0.01, 86400]" $cfg \
  --set comm.rendezvous_timeout_s=1e6
# TOML's own inf and nan literals are refused as well.
printf '[train]\nbeta2 = inf\n' > "$tmp/inf.toml"
expect_error "train.beta2 = inf: must be in [0, 1)" "$tmp/inf.toml"
printf '[model]\ninit_std = nan\n' > "$tmp/nan.toml"
expect_error "model.init_std = nan: must be in (0, 1]" "$tmp/nan.toml"

# Output paths: only regular files (or new ones) are written; anything else is refused before
# training, naming the path and what it is, and left exactly as it was.
# A regression could replace the device node: use a copy of /dev/full, or the real one only where
# this process cannot write /dev.
device=
if mknod "$tmp/full" c 1 7 2>/dev/null; then
  device=$tmp/full
elif [ ! -w /dev ]; then
  device=/dev/full
else
  echo "skipped: the character-device case (no copy of /dev/full can be made, and /dev is writable)"
fi
if [ -n "$device" ]; then
  expect_error "--summary-json '$device': is a character device, not a regular file" $cfg --summary-json "$device"
  [ -c "$device" ] || fail "$device is no longer a character device"
fi
mkfifo "$tmp/fifo"
expect_error "--summary-json '$tmp/fifo': is a FIFO, not a regular file" $cfg --summary-json "$tmp/fifo"
[ -p "$tmp/fifo" ] || fail "the FIFO given as --summary-json was replaced"
printf 'precious\n' > "$tmp/target"
ln -s "$tmp/target" "$tmp/link"
expect_error "--summary-json '$tmp/link': is a symbolic link (to '$tmp/target')" $cfg --summary-json "$tmp/link"
[ -L "$tmp/link" ] && [ "$(cat "$tmp/target")" = precious ] || fail "the symbolic link or its target changed"
mkdir "$tmp/dir"
expect_error "--summary-json '$tmp/dir': is a directory" $cfg --summary-json "$tmp/dir"
expect_error "--trace '$tmp/dir': is a directory" $cfg --trace "$tmp/dir"
# The pre-check of a path whose run then fails leaves the user's PATH.tmp alone and no file behind.
printf 'mine\n' > "$tmp/kept.json.tmp"
want_rc=2
expect_error "--trace records the pipeline executor" $cfg --summary-json "$tmp/kept.json" --trace "$tmp/t.json"
[ "$(cat "$tmp/kept.json.tmp")" = mine ] || fail "the user's kept.json.tmp was changed by the pre-check"
leftovers=$(find "$tmp" -name '.*tmp-*')
[ -z "$leftovers" ] || fail "temporary files left behind: $leftovers"

# Input files: a FIFO is refused without blocking (every run is under timeout), a missing or
# unreadable config says so, and data.val_path with format text is used (its too-short file is
# named), not ignored.
want_rc=2
expect_error "data.path '$tmp/fifo': is a FIFO, not a regular file" $cfg --set data.path="$tmp/fifo"
printf 'too short' > "$tmp/short.txt"
expect_error "the held-out split of '$tmp/short.txt' has 9 tokens" $cfg --set data.val_path="$tmp/short.txt"
expect_error "data.val_path './data/../data/kjv.txt' is the same file as data.path" $cfg \
  --set data.val_path=./data/../data/kjv.txt
want_rc=2
expect_error "config file '$tmp/fifo': is a FIFO, not a regular file" "$tmp/fifo"
# A flag where a path belongs, or no path at all, is not a file name.
expect_error "--summary-json needs a value, got '--trace'" $cfg --summary-json --trace
expect_error "--summary-json needs a value, got ''" $cfg --summary-json=
mkdir -m 755 "$tmp/open"
cp $cfg "$tmp/open/unreadable.toml"
chmod 000 "$tmp/open/unreadable.toml"
if [ "$(id -u)" -ne 0 ]; then
  expect_error "config file '$tmp/open/unreadable.toml': cannot be read: Permission denied" "$tmp/open/unreadable.toml"
elif command -v setpriv >/dev/null && chmod 711 "$tmp" && train=$(readlink -f "$train") &&
     setpriv --reuid=65534 --regid=65534 --clear-groups true 2>/dev/null; then
  # Root reads any file whatever its mode: read it as the user nobody instead.
  train_as_root=$train
  printf '#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups %s "$@"\n' "$train" > "$tmp/as_nobody"
  chmod 755 "$tmp/as_nobody"
  train=$tmp/as_nobody
  expect_error "config file '$tmp/open/unreadable.toml': cannot be read: Permission denied" "$tmp/open/unreadable.toml"
  train=$train_as_root
else
  echo "skipped: an unreadable config (running as root without setpriv, root reads any file)"
fi
want_rc=""

# A finished run whose summary cannot be written fails with the reason and keeps the summary on
# stderr. The write fails deterministically: a file size limit of 1 KiB (which binds root too)
# passes the pre-check's empty probe but not the summary; the output goes through a pipe, which the
# limit does not touch. tandem-train itself ignores SIGXFSZ, so the write fails instead of the
# signal killing the finished run.
small=(--set model.n_layers=1 --set model.n_dense_layers=1 --set model.d_model=32 --set model.n_heads=2
       --set model.seq_len=32 --set train.batch_size=4 --set train.eval_batches=1 --set train.eval_interval=0)
(ulimit -f 1; exec timeout 120 "$train" $cfg "${small[@]}" --set train.steps=50 \
   --summary-json "$tmp/big.json") 2>&1 | cat > "$tmp/big.out"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 1 ]; then
  fail "exit $rc (wanted 1) when the summary could not be written"; cat "$tmp/big.out"
elif ! grep -qF "tandem-train: error: --summary-json '$tmp/big.json': cannot write it: File too large" "$tmp/big.out" ||
     ! grep -q "the summary follows on stderr" "$tmp/big.out"; then
  fail "no reason for the lost summary"; cat "$tmp/big.out"
elif ! sed -n '/the summary follows on stderr/,$p' "$tmp/big.out" | tail -n +2 |
     python3 -c 'import json, sys; s = json.load(sys.stdin); assert len(s["losses"]) == 50'; then
  fail "the summary on stderr is not the whole run's"
elif [ -e "$tmp/big.json" ] || [ -n "$(find "$tmp" -name '.*tmp-*')" ]; then
  fail "a failed summary write left a file behind"
else
  echo "ok: a summary that cannot be written is kept on stderr"
fi

# A summary written over the old one: complete JSON, the old file's permissions (a private file
# stays private), the user's PATH.tmp untouched, no temporary file left in the directory.
printf 'old\n' > "$tmp/ok.json"
chmod 600 "$tmp/ok.json"
printf 'mine\n' > "$tmp/ok.json.tmp"
if timeout 120 "$train" $cfg "${small[@]}" --set train.steps=2 --summary-json "$tmp/ok.json" >/dev/null 2>&1 &&
   python3 -c 'import json, sys; assert json.load(open(sys.argv[1]))["steps"] == 2' "$tmp/ok.json" &&
   [ "$(stat -c %a "$tmp/ok.json")" = 600 ] &&
   [ "$(cat "$tmp/ok.json.tmp")" = mine ] && [ -z "$(find "$tmp" -name '.*tmp-*')" ]; then
  echo "ok: the summary replaced the old file and touched nothing else"
else
  fail "writing the summary over an old one"
fi

# The per-step log: a run appends one JSON line per step and evaluation, a second run appends to
# the same file; a directory as the log is refused before training.
want_rc=2
expect_error "--log-jsonl '$tmp/dir': is a directory" $cfg --log-jsonl "$tmp/dir"
want_rc=""
for run in 1 2; do
  timeout 120 "$train" $cfg "${small[@]}" --set train.steps=3 --log-jsonl "$tmp/steps.jsonl" >/dev/null 2>&1 ||
    fail "run $run with --log-jsonl failed"
done
if python3 - "$tmp/steps.jsonl" <<'PY'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1])]
steps = [r["step"] for r in records if "loss" in r]
evals = [r for r in records if "eval_loss" in r]
assert steps == [1, 2, 3, 1, 2, 3], steps
assert len(evals) == 2 and all(r["step"] == 3 for r in evals), evals
for r in records:
    if "loss" in r:
        assert set(r) == {"step", "loss", "lr", "grad_norm", "tokens", "step_seconds", "restart"}, r
        assert r["restart"] == 0 and r["tokens"] == 4 * 32 and r["step_seconds"] > 0, r
PY
then echo "ok: --log-jsonl appends a line per step and evaluation"; else fail "--log-jsonl records"; fi

[ $failures -eq 0 ] && echo "bad_input: all cases refused clearly" || echo "bad_input: $failures failures"
exit $((failures > 0))
