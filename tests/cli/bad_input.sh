#!/usr/bin/env bash
# tandem-train refuses bad input with a clear message and a non-zero exit, and writes nothing.
# Usage: bad_input.sh PATH/TO/tandem-train   (run from the repository root)
set -u
train=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
cfg=examples/configs/tiny.toml

expect_error() {  # expect_error "what the message must contain" args...
  local want=$1
  shift
  local out rc
  out=$("$train" --summary-json "$tmp/summary.json" "$@" 2>&1)
  rc=$?
  if [ $rc -ne 1 ] && [ $rc -ne 2 ]; then  # 0 is success; anything else is a crash
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
expect_error 'comm.expert_exchange = "memory" is not one of "auto", "shared_memory", "messages"' $cfg \
  --set comm.expert_exchange=memory
expect_error "model.top_k = 9 must be between 1 and model.n_routed_experts = 8" $cfg --set model.top_k=9
expect_error "train.batch_size must be positive, got 0" $cfg --set train.batch_size=0
expect_error "cannot open data file '/nonexistent/kjv.txt'" $cfg --set data.path=/nonexistent/kjv.txt
expect_error "is not a regular file" $cfg --set data.path=/tmp
expect_error "not a whole number of uint16 tokens" $cfg --set data.format=uint16 \
  --set data.path="$tmp/odd.bin" --set data.val_path="$tmp/odd.bin"
expect_error "unknown option '--step'" $cfg --step 3
expect_error "cannot read config file 'examples/configs': not a regular file" examples/configs
expect_error "cannot write the summary next to '/nonexistent/s.json'" $cfg --summary-json /nonexistent/s.json
# Grids are refused before any rank talks to another (a torchrun-style environment of 3 ranks).
expect_error "parallel.pp = 2 needs a multiple of 2 ranks, but this process runs alone" $cfg --set parallel.pp=2
expect_error "parallel.schedule = \"dualpipe2\" is not one of \"1f1b\", \"zb-h1\", \"dualpipe\", \"dualpipev\"; did you mean \"dualpipe\"?" $cfg --set parallel.schedule=dualpipe2
train_plain=$train
expect_grid() { local want=$1; shift; train=$train_plain; RANK=0 WORLD_SIZE=3 LOCAL_RANK=0 LOCAL_WORLD_SIZE=3 MASTER_ADDR=127.0.0.1 MASTER_PORT=1 expect_error "$want" "$@"; }
expect_grid "world of 3 ranks is not divisible by parallel.pp = 2" $cfg --set parallel.pp=2
expect_grid "parallel.ep = 2 does not divide the data-parallel size dp = world 3 / pp 1 = 3" $cfg --set parallel.ep=2
expect_grid "train.batch_size = 16 sequences do not split evenly over dp = 3" $cfg
train=$train_plain

[ $failures -eq 0 ] && echo "bad_input: all cases refused clearly" || echo "bad_input: $failures failures"
exit $((failures > 0))
