#!/usr/bin/env bash
# The live page (/status on the metrics port) of a running 2-rank job started the torchrun way,
# with rank 1 slowed by a sleep in each step: it shows the current step with the loss the job
# printed for it, its four charts (loss with held-out loss, tokens/s, per-rank step split, expert
# load) as SVG that parses, rank 1 named a straggler, and nothing fetched from elsewhere; then a
# real headless browser (Debian's chromium) renders it: the DOM it built holds the same, and its
# screenshot is written to BUILD/status-page.png for a person to look at.
# Usage: status_page_test.sh BIN_DIR   (run from the repository root)
set -u
bin=$1
source "$(dirname "$0")/../multirank/torchrun_ranks.sh"
tmp=$(mktemp -d)
all_pids=()
cleanup() {
  for pid in "${all_pids[@]}"; do kill -9 "$pid" 2> /dev/null; done
  wait 2> /dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  for f in "$tmp"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 8 "$f"; }; done
  exit 1
}
scripts/prepare-data > /dev/null || fail "scripts/prepare-data"
py=/usr/bin/python3
metrics=$(free_port 26000 31000) || fail "no free port"
TANDEM_TEST_SLOW_RANK=1:60 start_torchrun_ranks 2 "$tmp/rank" "$bin/tandem-train" \
  examples/configs/tiny.toml --set train.log_interval=1 --set train.steps=100000 --set train.threads=1 \
  --set train.eval_interval=5 --set train.eval_batches=1 --set monitoring.straggler_window=6 \
  --set monitoring.metrics_port="$metrics" || fail "could not start the ranks"
all_pids+=("${pids[@]}")
page=http://127.0.0.1:$metrics/status
fetch() { $py -c 'import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' "$1"; }
deadline=$((SECONDS + 120))
until fetch "$page" > "$tmp/page.html" 2> /dev/null &&
  grep -q 'id="stragglers"' "$tmp/page.html" &&
  [ "$(grep -o '<b id="step">[0-9]*' "$tmp/page.html" | grep -o '[0-9]*$')" -ge 12 ]; do
  [ $SECONDS -lt $deadline ] || fail "the page did not show step 12 and a straggler in 120 s"
  sleep 0.3
done
$py - "$tmp/page.html" "$tmp/rank0.log" << 'PY' || fail "the page is not as expected"
import re, sys, xml.etree.ElementTree as ET
html = open(sys.argv[1]).read()
step = int(re.search(r'<b id="step">(\d+)</b>', html).group(1))
loss = re.search(r"loss <b>([0-9.]+)</b>", html).group(1)
printed = re.search(rf"step {step}/\d+ \| loss ([0-9.]+)", open(sys.argv[2]).read())
assert printed, f"rank 0 did not print step {step}"
assert printed.group(1) == loss, f"page loss {loss}, printed {printed.group(1)} at step {step}"
svgs = re.findall(r"<svg.*?</svg>", html, re.S)
assert len(svgs) == 4, f"{len(svgs)} charts"
for svg in svgs:
    ET.fromstring(svg)  # well-formed
assert "<polyline" in svgs[0] and "<circle" in svgs[0], "no loss curve or held-out points"
assert "rank 1" in re.search(r'id="stragglers">([^<]*)<', html).group(1)
assert "straggler (speed" in svgs[2], "the bar of rank 1 is not marked"
assert svgs[3].count("<rect") >= 8, "no expert heat map"
assert "<script" not in html and "src=" not in html and "@import" not in html
assert 'http-equiv="refresh"' in html
print(f"ok: step {step}, loss {loss} as printed, 4 well-formed charts, rank 1 marked a straggler")
PY

browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  [ "${CI:-}" = true ] && fail "chromium is not installed (scripts/install-deps installs it)"
  echo "SKIP: no chromium here: the page was not rendered by a browser"
  exit 0
fi
shot=$(dirname "$bin")/status-page.png
start=$SECONDS
browse=("$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run
  --user-data-dir="$tmp/chromium" --window-size=1200,900)
timeout 60 "${browse[@]}" --dump-dom "$page" > "$tmp/dom.html" 2> "$tmp/chromium.log" ||
  fail "chromium --dump-dom failed: $(tail -3 "$tmp/chromium.log")"
timeout 60 "${browse[@]}" --screenshot="$shot" "$page" >> "$tmp/chromium.log" 2>&1 ||
  fail "chromium --screenshot failed: $(tail -3 "$tmp/chromium.log")"
$py - "$tmp/dom.html" "$shot" << 'PY' || fail "chromium's rendering is not as expected"
import re, struct, sys
dom = open(sys.argv[1]).read()
assert dom.count("<svg") == 4, f"{dom.count('<svg')} charts in the browser's DOM"
assert re.search(r'<b id="step">\d+</b>', dom), "no step in the browser's DOM"
png = open(sys.argv[2], "rb").read()
assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
width, height = struct.unpack(">II", png[16:24])
assert (width, height) == (1200, 900), (width, height)
# A blank 1200x900 page compresses to a few kB; four charts and text do not.
assert len(png) > 20000, f"the screenshot is {len(png)} bytes: blank?"
print(f"ok: chromium built a DOM with the 4 charts; screenshot {width}x{height}, {len(png)} bytes")
PY
echo "ok: the page rendered in a real browser in $((SECONDS - start)) s; screenshot: $shot"
