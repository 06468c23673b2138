#!/usr/bin/env bash
# tandem-schedule prints DualPipe's reference orders, writes a well-formed SVG, and refuses bad
# flags with exit status 2 and a message naming the flag.
# Usage: schedule_cli.sh PATH/TO/tandem-schedule
set -u
tool=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

# --print: the orders of deepseek-ai/DualPipe for pp 4 and 8 micro-batches.
out=$("$tool" --schedule dualpipe --pp 4 --microbatches 8 --print 2>&1) || fail "--print exited $?: $out"
for want in \
  "rank 0: F0.0 F0.1 F0.2 F1.0 b1.0 W F1.1 F0.3&B1.1 F1.2&B0.0 B1.2 F1.3&B0.1 B1.3 b0.2 W b0.3 W" \
  "rank 1: F0.0 F1.0 F0.1 F1.1 F0.2 B1.0 F1.2&B0.0 F0.3&B1.1 F1.3&B0.1 B1.2 B0.2 b1.3 b0.3 W W"; do
  grep -qxF -- "$want" <<<"$out" || fail "--print lacks the line: $want"
done
for want in "bubble: 2 " "published formula (PP/2-1)(F&B+B-3W): 2" "peak activations per rank: 5 5 5 5"; do
  grep -qF -- "$want" <<<"$out" || fail "summary lacks '$want'; got: $out"
done

# --svg: a well-formed document with an <svg> root.
"$tool" --schedule dualpipev --pp 3 --microbatches 8 --fb 2.5 --comm 0.2 --svg "$tmp/v.svg" \
  >/dev/null 2>&1 || fail "--svg exited non-zero"
if [ ! -s "$tmp/v.svg" ]; then
  fail "--svg wrote nothing"
elif ! python3 - "$tmp/v.svg" <<'PY'
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "{http://www.w3.org/2000/svg}svg", root.tag
assert len(root.findall("{http://www.w3.org/2000/svg}rect")) > 50
PY
then
  fail "--svg output is not a well-formed SVG"
fi

# Bad arguments: exit 2, "tandem-schedule: error:", and the flag named.
expect_usage_error() {  # expect_usage_error "text the message must contain" args...
  local want=$1
  shift
  local out rc
  out=$("$tool" "$@" 2>&1)
  rc=$?
  if [ $rc -ne 2 ]; then
    fail "exit $rc (wanted 2) for: $*; got: $out"
  elif ! grep -q "^tandem-schedule: error: " <<<"$out"; then
    fail "no 'tandem-schedule: error:' line for: $*; got: $out"
  elif ! grep -qF -- "$want" <<<"$out"; then
    fail "message for: $*; wanted: $want; got: $out"
  else
    echo "ok: $* -> $(head -n1 <<<"$out")"
  fi
}
base=(--schedule dualpipe --pp 4 --microbatches 8)
expect_usage_error "unknown option '--stages'" "${base[@]}" --stages 4
expect_usage_error "--pp: 'four' is not an integer" --schedule 1f1b --pp four --microbatches 8
expect_usage_error "--microbatches: '8.5' is not an integer" --schedule 1f1b --pp 4 --microbatches 8.5
expect_usage_error "--comm: 'fast' is not a number" "${base[@]}" --comm fast
expect_usage_error "--f: -1 must be a finite number >= 0" "${base[@]}" --f -1
expect_usage_error "--svg needs a value" "${base[@]}" --svg
expect_usage_error '--schedule = "gpipe" is not one of "1f1b"' --schedule gpipe --pp 4 --microbatches 8
expect_usage_error 'is more than this tool simulates' --schedule 1f1b --pp 100000 --microbatches 100000
expect_usage_error "--pp 3 --microbatches 8: dualpipe needs an even pipeline size, got pp = 3" \
  --schedule dualpipe --pp 3 --microbatches 8
expect_usage_error "needs at least 2*pp = 16 micro-batches for pp = 8, got 10" \
  --schedule dualpipe --pp 8 --microbatches 10
expect_usage_error "--microbatches is missing" --schedule 1f1b --pp 4
expect_usage_error "--w 3" "${base[@]}" --w 3

"$tool" --help | grep -q "^usage: tandem-schedule" || fail "--help prints no usage"

if [ $failures -ne 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "all tandem-schedule CLI checks passed"
