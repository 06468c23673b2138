#!/usr/bin/env bash
# tandem-train refuses bad input with a clear message and a non-zero exit, and writes nothing.
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

expect_error "no config file given"
expect_error "cannot read config file '$tmp/none.toml'" "$tmp/none.toml"
expect_error "$tmp/syntax.toml:1" "$tmp/syntax.toml"
expect_error "unknown configuration key 'model.d_modle'; did you mean 'model.d_model'?" "$tmp/typo.toml"
expect_error "did you mean 'train.steps'?" $cfg --set train.step=3
expect_error "--set train.steps: value 'many' is not an integer" $cfg --set train.steps=many
expect_error "model.n_heads = 3 does not divide model.d_model = 128" $cfg --set model.n_heads=3
expect_error 'comm.expert_exchange = "memory"; expected auto, shared_memory or messages' $cfg \
  --set comm.expert_exchange=memory
expect_error "model.top_k = 9 must be between 1 and model.n_routed_experts = 8" $cfg --set model.top_k=9
expect_error "train.batch_size = 0: must be in [1, 2^24 = 16777216]" $cfg --set train.batch_size=0
expect_error "cannot open data file '/nonexistent/kjv.txt'" $cfg --set data.path=/nonexistent/kjv.txt
expect_error "is not a regular file" $cfg --set data.path=/tmp
expect_error "not a whole number of uint16 tokens" $cfg --set data.format=uint16 \
  --set data.path="$tmp/odd.bin" --set data.val_path="$tmp/odd.bin"
expect_error "unknown option '--step'" $cfg --step 3
expect_error "cannot read config file 'examples/configs': not a regular file" examples/configs
expect_error "cannot write the summary next to '/nonexistent/s.json'" $cfg --summary-json /nonexistent/s.json
# Grids are refused before any rank talks to another (a torchrun-style environment of 3 ranks).
expect_error "parallel.pp = 2 needs a multiple of 2 ranks, but this process runs alone" $cfg --set parallel.pp=2
expect_error "parallel.schedule = \"dualpipe2\" is not a schedule" $cfg --set parallel.schedule=dualpipe2
train_plain=$train
expect_grid() { local want=$1; shift; train=$train_plain; RANK=0 WORLD_SIZE=3 LOCAL_RANK=0 LOCAL_WORLD_SIZE=3 MASTER_ADDR=127.0.0.1 MASTER_PORT=1 expect_error "$want" "$@"; }
expect_grid "world of 3 ranks is not divisible by parallel.pp = 2" $cfg --set parallel.pp=2
expect_grid "parallel.ep = 2 does not divide the data-parallel size dp = world 3 / pp 1 = 3" $cfg --set parallel.ep=2
expect_grid "train.batch_size = 16 sequences do not split evenly over dp = 3" $cfg
train=$train_plain

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
# TOML's own inf and nan literals are refused as well.
printf '[train]\nbeta2 = inf\n' > "$tmp/inf.toml"
expect_error "train.beta2 = inf: must be in [0, 1)" "$tmp/inf.toml"
printf '[model]\ninit_std = nan\n' > "$tmp/nan.toml"
expect_error "model.init_std = nan: must be in (0, 1]" "$tmp/nan.toml"

want_rc=""

[ $failures -eq 0 ] && echo "bad_input: all cases refused clearly" || echo "bad_input: $failures failures"
exit $((failures > 0))
