#!/usr/bin/env bash
# The installed package from a project of its own: examples/embed (CXX only) configured against
# PREFIX with find_package(tandem), built, and run alone and as 2 ranks under mpirun, with
# tandem-train's losses to the bit; its own data source learns; steering from code applies; a
# program built with pkg-config alone links and runs; the installed tandem-train runs.
# Usage: embed_example.sh PREFIX BIN MPIRUN...   (run from the repository root)
set -euo pipefail
prefix=$1 bin=$2
shift 2
mpirun=("$@")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "embed_example: FAIL: $*" >&2; exit 1; }

cmake -S examples/embed -B "$tmp/build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
  > "$tmp/configure.log" 2>&1 || { cat "$tmp/configure.log"; fail "examples/embed does not configure"; }
cmake --build "$tmp/build" -j "$(nproc)" > "$tmp/build.log" 2>&1 ||
  { cat "$tmp/build.log"; fail "examples/embed does not build"; }
embed=$tmp/build/embed_train
# The build tree's headers are not what the program compiled against.
grep -q "$prefix/include" "$tmp/build/CMakeFiles/embed_train.dir/flags.make" ||
  fail "embed_train did not compile against $prefix/include"
! grep -q "$PWD/runtime" "$tmp/build/CMakeFiles/embed_train.dir/flags.make" ||
  fail "embed_train saw the source tree's internal headers"

losses() { grep -oE "^(\[rank 0\] )?embed_train: step [0-9]+ loss [0-9.e+-]+" "$1" | awk '{print $NF}'; }
cli_losses() {
  /usr/bin/python3 -c 'import json,sys; [print(f"{l:.17g}") for l in json.load(open(sys.argv[1]))["losses"]]' "$1"
}
# Alone: tandem-train's losses, a learning-rate change and a checkpoint from code, read back.
sets=(train.steps=6 train.eval_batches=1 train.threads=1)
"$embed" examples/configs/tiny.toml --steer "${sets[@]}" checkpoint.dir="$tmp/ck" \
  > "$tmp/alone.log" 2>&1 || { cat "$tmp/alone.log"; fail "embed_train exited with $?"; }
"$bin/tandem-train" examples/configs/tiny.toml $(printf -- "--set %s " "${sets[@]}") \
  --set control.port=0 --summary-json "$tmp/cli.json" > "$tmp/cli.log" 2>&1 ||
  { cat "$tmp/cli.log"; fail "tandem-train exited with $?"; }
# Steps 1..3 precede the learning-rate change the program asks for.
diff <(losses "$tmp/alone.log" | head -3) <(cli_losses "$tmp/cli.json" | head -3) ||
  fail "embed_train's first steps differ from tandem-train's"
for text in "set_learning_rate: ok, applied from step 4" "checkpoint: ok $tmp/ck/step-00000004 (step 4)" \
  "78 parameters by name, 1474688 values" "control: learning rate 0.0001 from step 4 on"; do
  grep -qF "$text" "$tmp/alone.log" || { cat "$tmp/alone.log"; fail "no '$text'"; }
done
grep -F "embed_train:" "$tmp/alone.log" | tail -4

# Its own data: a predictable sequence, which the model learns.
"$embed" examples/configs/tiny.toml --synthetic train.steps=40 train.eval_interval=40 \
  train.threads=1 > "$tmp/synthetic.log" 2>&1 || { cat "$tmp/synthetic.log"; fail "--synthetic"; }
held_out=$(grep -oE "^eval step 40 \| held-out loss [0-9.]+" "$tmp/synthetic.log" | awk '{print $NF}')
awk -v l="$held_out" 'BEGIN { exit !(l != "" && l < 0.5) }' ||
  { cat "$tmp/synthetic.log"; fail "the synthetic data's held-out loss is $held_out, not below 0.5"; }
echo "embed_example: its own data source: held-out loss $held_out after 40 steps"

# 2 ranks under mpirun: the grid the launcher set up, with tandem-train's losses.
"${mpirun[@]}" -np 2 "$embed" examples/configs/tiny.toml "${sets[@]}" > "$tmp/two.log" 2>&1 ||
  { cat "$tmp/two.log"; fail "embed_train under mpirun exited with $?"; }
"${mpirun[@]}" -np 2 "$bin/tandem-train" examples/configs/tiny.toml $(printf -- "--set %s " "${sets[@]}") \
  --summary-json "$tmp/cli2.json" > "$tmp/cli2.log" 2>&1 || { cat "$tmp/cli2.log"; fail "mpirun tandem-train"; }
diff <(losses "$tmp/two.log") <(cli_losses "$tmp/cli2.json") ||
  fail "embed_train's 2-rank losses differ from tandem-train's"
grep -q "2 ranks" "$tmp/two.log" || fail "embed_train under mpirun did not run as 2 ranks"
echo "embed_example: alone and 2 ranks under mpirun: tandem-train's losses"

# pkg-config alone (no CMake): a program printing the version links against the static library.
cat > "$tmp/version.cc" << 'CC'
#include <cstdio>
#include <tandem/tandem.h>
int main() { std::printf("%s %s\n", tandem::version(), TANDEM_VERSION_STRING); }
CC
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
# shellcheck disable=SC2046
g++ "$tmp/version.cc" -o "$tmp/version" $(pkg-config --static --cflags --libs tandem) \
  > "$tmp/pkg.log" 2>&1 || { cat "$tmp/pkg.log"; fail "pkg-config --static --libs tandem does not link"; }
version=$(pkg-config --modversion tandem)
[ "$("$tmp/version")" = "$version $version" ] || fail "the pkg-config program printed $("$tmp/version")"
[ "$("$prefix/bin/tandem-train" --version | cut -d' ' -f2)" = "$version" ] ||
  fail "the installed tandem-train is not version $version"
echo "embed_example: ok: find_package(tandem) and pkg-config (tandem $version) from $prefix"
