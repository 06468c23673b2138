#!/usr/bin/env bash
# tandem-launch's node endpoint: one port for both ranks of a 2-rank job, scraped every 0.2 s
# throughout. A SIGSTOPped rank does not hold a scrape past its 2 s deadline (the scrape answers
# with the other rank, and tandem_launcher_rank_answered 0 for the stopped one). kill -9 of a rank:
# the launcher restarts the job, no scrape fails (every one answers 200 and passes promtool), and
# after the restart both ranks are back with tandem_restarts_total 1 and their steps increasing;
# /status says "restarting (attempt 1)" with the cause until the new rank 0 has a page.
# A node port that is taken: tandem-launch exits 2 with a message naming monitoring.metrics_port,
# and restarts nothing.
# Usage: node_metrics_test.sh BIN_DIR   (run from the repository root)
set -u
bin=$(realpath "$1")
source "$(dirname "$0")/../multirank/torchrun_ranks.sh"
command -v promtool > /dev/null || { echo "promtool is needed (Debian package prometheus)"; exit 1; }
tmp=$(mktemp -d)
launcher_pid="" holder_pid=""
cleanup() {
  [ -n "$launcher_pid" ] && kill -9 "$launcher_pid" 2> /dev/null
  [ -n "$holder_pid" ] && kill -9 "$holder_pid" 2> /dev/null
  wait 2> /dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  echo "--- launcher log (last lines)"
  tail -n 20 "$tmp/job.log" 2> /dev/null
  exit 1
}
scripts/prepare-data > /dev/null || fail "scripts/prepare-data"

port=$(free_port 20000 31000) || fail "no free port"
run_id=node-metrics-$$
train=("$bin/tandem-train" examples/configs/tiny.toml --set train.log_interval=1 --set parallel.ep=2 --set train.steps=100000
  --set train.eval_interval=0 --set train.eval_batches=1 --set train.threads=1
  --set monitoring.metrics_port="$port" --set monitoring.sd_file="$tmp/targets.json"
  --set monitoring.job=node-test --set comm.timeout_s=20)
TANDEM_RUN_ID=$run_id "$bin/tandem-launch" --nproc-per-node 2 --master-port 0 --max-restarts 1 \
  -- "${train[@]}" > "$tmp/job.log" 2>&1 &
launcher_pid=$!

/usr/bin/python3 - "$port" "$run_id" "$tmp" "$launcher_pid" << 'PY' || fail "see above"
import json, os, re, signal, subprocess, sys, threading, time, urllib.request

port, run_id, tmp, launcher = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
url = f"http://127.0.0.1:{port}/metrics"
deadline = time.time() + 200

def rank_pid(rank, attempt):
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            env = open(f"/proc/{d}/environ", "rb").read().split(b"\0")
            name = open(f"/proc/{d}/comm").read().strip()
        except OSError:
            continue
        want = [f"TANDEM_RUN_ID={run_id}", f"RANK={rank}", f"TANDEM_RESTART_COUNT={attempt}"]
        if name == "tandem-train" and all(w.encode() in env for w in want):
            return int(d)
    return None

def parse(text):
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out

def value(samples, name, rank):
    for series, v in samples.items():
        if series.startswith(name + "{") and f'rank="{rank}"' in series:
            return v
    return None

# The endpoint answers at all (the ranks' hello binds it).
while True:
    assert time.time() < deadline, "the node endpoint never answered"
    assert os.path.exists(f"/proc/{launcher}"), "the launcher ended early"
    try:
        urllib.request.urlopen(url, timeout=5).read()
        break
    except OSError:
        time.sleep(0.1)

# Scrapes every 0.2 s from now on, each kept: (start, seconds, status, body).
scrapes, stop = [], threading.Event()
def scrape_forever():
    n = 0
    while not stop.is_set():
        start = time.time()
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                status, body = r.status, r.read().decode()
        except Exception as e:
            status, body = f"error {e}", ""
        scrapes.append((start, time.time() - start, status, body))
        n += 1
        if n % 3 == 0:
            open(f"{tmp}/scrape-{n}.txt", "w").write(body)
        time.sleep(0.2)
scraper = threading.Thread(target=scrape_forever, daemon=True)
scraper.start()

def latest(where=lambda s: True):
    while True:
        assert time.time() < deadline, "timed out"
        assert os.path.exists(f"/proc/{launcher}"), "the launcher ended early"
        if scrapes and where(parse(scrapes[-1][3])):
            return parse(scrapes[-1][3])
        time.sleep(0.1)

both_stepping = lambda s: all((value(s, "tandem_steps_total", r) or 0) >= 5 for r in (0, 1))
latest(both_stepping)
print(f"ok: one endpoint (port {port}) serves both ranks' tandem_steps_total")

# A stopped rank does not hold the scrape past its deadline.
stopped = rank_pid(1, 0)
assert stopped, "rank 1 of attempt 0 not found"
os.kill(stopped, signal.SIGSTOP)
t0 = time.time()
latest(lambda s: value(s, "tandem_launcher_rank_answered", 1) == 0)
during = [s for s in scrapes if s[0] > t0 + 0.05]
time.sleep(3)
during = [s for s in scrapes if s[0] > t0 + 0.05]
os.kill(stopped, signal.SIGCONT)
slowest = max(s[1] for s in during)
assert all(s[2] == 200 for s in during), [s[2] for s in during]
assert slowest < 2.5, f"a scrape took {slowest:.3f} s with rank 1 stopped"
assert all(value(parse(s[3]), "tandem_steps_total", 0) is not None for s in during)
print(f"ok: rank 1 SIGSTOPped: {len(during)} scrapes answered 200, the slowest in {slowest:.3f} s "
      f"(deadline 2 s), with rank 0's series and tandem_launcher_rank_answered 0 for rank 1")
latest(lambda s: value(s, "tandem_launcher_rank_answered", 1) == 1)

# kill -9: the launcher restarts every rank; the endpoint answers throughout, and /status shows
# the job restarting (the last page, its state "restarting") until the new rank 0 has a page.
status_url = f"http://127.0.0.1:{port}/status"
def get_status():
    try:
        with urllib.request.urlopen(status_url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except Exception as e:
        return f"error {e}", ""
code, page = get_status()
assert code == 200 and 'id="state"' in page and ">running<" in page, (code, page[:300])
pages, status_stop = [], threading.Event()
def status_forever():
    while not status_stop.is_set():
        pages.append(get_status())
        time.sleep(0.05)
status_poller = threading.Thread(target=status_forever, daemon=True)
status_poller.start()
killed_at = time.time()
victim = rank_pid(1, 0)
os.kill(victim, signal.SIGKILL)
back = latest(lambda s: all(value(s, "tandem_restarts_total", r) == 1 and
                            (value(s, "tandem_steps_total", r) or 0) >= 3 for r in (0, 1)))
later = latest(lambda s: all((value(s, "tandem_steps_total", r) or 0) >
                             value(back, "tandem_steps_total", r) for r in (0, 1)))
stop.set()
scraper.join()
status_stop.set()
status_poller.join()
assert all(c == 200 for c, _ in pages), sorted({str(c) for c, _ in pages})
restarting = [p for _, p in pages if ">restarting (attempt 1)<" in p]
assert restarting, f"none of {len(pages)} /status pages across the restart said restarting"
assert 'id="stale"' in restarting[0] and "rank 1" in restarting[0], restarting[0][:600]
assert "<svg" in restarting[0], "the restarting page lost the last page's charts"
last = pages[-1][1]
assert 'id="stale"' not in last and ">running<" in last and "restarts 1" in last, last[:600]
stale = sum('id="stale"' in p for _, p in pages) - len(restarting)
print(f"ok: /status across the restart: {len(pages)} pages, all 200; {stale} 'not answering' "
      f"(the failure being handled), {len(restarting)} 'restarting (attempt 1)' with the cause "
      f"and the last charts; then the new rank 0's page (running, restarts 1)")
across = [s for s in scrapes if s[0] >= killed_at]
bad = [s[2] for s in across if s[2] != 200]
assert not bad, f"scrapes failed across the restart: {bad}"
gap = max(s[1] for s in across)
print(f"ok: kill -9 of rank 1; {len(across)} scrapes across the restart all answered 200 (slowest "
      f"{gap:.3f} s); after it both ranks have tandem_restarts_total 1 and steps "
      f"{value(back, 'tandem_steps_total', 0):.0f} -> {value(later, 'tandem_steps_total', 0):.0f}")
# Every third scrape was kept: each must pass promtool.
kept = sorted(f for f in os.listdir(tmp) if f.startswith("scrape-"))
for f in kept:
    r = subprocess.run(["promtool", "check", "metrics"], stdin=open(f"{tmp}/{f}"),
                       capture_output=True, text=True)
    assert r.returncode == 0, f"promtool check metrics refuses {f}: {r.stdout}{r.stderr}"
print(f"ok: promtool check metrics accepts all {len(kept)} kept scrapes (before, during and after)")
targets = json.load(open(f"{tmp}/targets.json"))
assert len(targets) == 1 and targets[0]["targets"] == [f"127.0.0.1:{port}"], targets
assert set(targets[0]["labels"]) == {"job", "node"}, targets
print(f"ok: the launcher's targets file holds one target, {targets[0]['targets'][0]}, labelled job and node")
PY
kill -TERM "$launcher_pid" 2> /dev/null
wait "$launcher_pid" 2> /dev/null
launcher_pid=""
attempts=$(grep -c "tandem-launch: attempt" "$tmp/job.log")
[ "$attempts" = 2 ] || fail "$attempts attempts, expected 2 (one restart)"

# A taken node port: exit 2 naming the key, no restart.
holder_port=$(free_port 20000 31000) || fail "no free port"
/usr/bin/python3 -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1); time.sleep(300)' "$holder_port" &
holder_pid=$!
for _ in $(seq 50); do ss -ltn 2> /dev/null | grep -q ":$holder_port " && break; sleep 0.1; done
code=0
"$bin/tandem-launch" --nproc-per-node 2 --master-port 0 --max-restarts 3 -- "${train[@]}" \
  --set monitoring.metrics_port="$holder_port" > "$tmp/taken.log" 2>&1 || code=$?
[ "$code" = 2 ] || { cat "$tmp/taken.log"; fail "a taken node port: exit $code, expected 2"; }
grep -q "monitoring.metrics_port: tandem-launch cannot serve node .* the port is in use" "$tmp/taken.log" ||
  { cat "$tmp/taken.log"; fail "no message naming monitoring.metrics_port"; }
[ "$(grep -c 'tandem-launch: attempt' "$tmp/taken.log")" = 1 ] || fail "restarted after exit 2"
echo "ok: a taken node port: exit 2, $(grep -m1 -o 'monitoring.metrics_port: tandem-launch cannot serve[^;]*' "$tmp/taken.log"), no restart"
echo "node_metrics_test: all passed"
