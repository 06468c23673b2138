#!/usr/bin/env bash
# End to end: a real Prometheus server (Debian's, on 127.0.0.1 with a scratch data directory)
# runs the shipped monitoring/prometheus/prometheus.yml, with only its intervals shortened to 1 s
# and its file_sd glob pointed at this test's directory, and scrapes a 2-rank job (under mpirun
# -np 2, or started the torchrun way: RANK, WORLD_SIZE, LOCAL_RANK... and no launcher) found
# through the targets file rank 0 wrote (one target per rank); or under tandem-launch, through
# the file its launcher wrote (one target: the node endpoint holding both ranks). Through
# Prometheus's HTTP API the test finds every target up, tandem_steps_total increasing for each
# rank, and tandem_loss equal, for the step the same scrape shows, to the loss the job printed.
# Every process it started is killed on every way out.
# Usage: prometheus_e2e.sh BIN_DIR mpirun MPIRUN [MPIRUN_ARGS...]
#        prometheus_e2e.sh BIN_DIR torchrun|tandem-launch   (run from the repository root)
set -u
bin=$1 mode=$2
shift 2
mpirun=("$@")
source "$(dirname "$0")/../multirank/torchrun_ranks.sh"
command -v prometheus > /dev/null && command -v promtool > /dev/null ||
  { echo "prometheus and promtool are needed (Debian package prometheus)"; exit 1; }
tmp=$(mktemp -d)
job_group="" prometheus_pid=""
cleanup() {
  # The job runs in a process group of its own (setsid), so mpirun (or the shell starting the
  # torchrun-style ranks) and every rank go together.
  if [ -n "$job_group" ]; then
    kill -TERM -- -"$job_group" 2> /dev/null
    for _ in $(seq 50); do kill -0 -- -"$job_group" 2> /dev/null || break; sleep 0.1; done
    kill -KILL -- -"$job_group" 2> /dev/null
  fi
  [ -n "$prometheus_pid" ] && kill -KILL "$prometheus_pid" 2> /dev/null
  wait 2> /dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
fail() {
  echo "FAIL: $*"
  echo "--- job log (last lines)"
  tail -n 15 "$tmp/job.log" 2> /dev/null
  echo "--- prometheus log (last lines)"
  tail -n 15 "$tmp/prometheus.log" 2> /dev/null
  exit 1
}
scripts/prepare-data > /dev/null || fail "scripts/prepare-data"

metrics_port=""
for _ in $(seq 100); do
  p=$(free_port 20000 31000) || break
  printf -v hex ':%04X ' $((p + 1))
  grep -qF "$hex" /proc/net/tcp /proc/net/tcp6 2> /dev/null || { metrics_port=$p; break; }
done
[ -n "$metrics_port" ] || fail "no free pair of ports for the ranks"
prometheus_port=$(free_port 20000 31000) || fail "no free port for Prometheus"
[ "$prometheus_port" != "$metrics_port" ] && [ "$prometheus_port" != $((metrics_port + 1)) ] ||
  prometheus_port=$((metrics_port + 2))

# The shipped configuration, faster and aimed at this test's targets directory.
mkdir -p "$tmp/targets" "$tmp/data"
sed -e 's/scrape_interval: 15s/scrape_interval: 1s/' -e 's/evaluation_interval: 15s/evaluation_interval: 1s/' \
  -e 's/refresh_interval: 30s/refresh_interval: 1s/' \
  -e "s|/var/lib/tandem/targets/\*.json|$tmp/targets/*.json|" \
  monitoring/prometheus/prometheus.yml > "$tmp/prometheus.yml"
grep -q "scrape_interval: 1s" "$tmp/prometheus.yml" && grep -qF "$tmp/targets/*.json" "$tmp/prometheus.yml" ||
  fail "monitoring/prometheus/prometheus.yml no longer has the lines this test adapts"
promtool check config "$tmp/prometheus.yml" > "$tmp/promtool.log" 2>&1 ||
  { cat "$tmp/promtool.log"; fail "promtool check config refuses the scrape configuration"; }

# More steps than the test needs: it stops the job once it has seen what it looks for.
train=("$bin/tandem-train" examples/configs/tiny.toml --set train.log_interval=1 --set parallel.ep=2 --set train.steps=100000
  --set train.eval_interval=20 --set train.eval_batches=1 --set monitoring.metrics_port="$metrics_port"
  --set monitoring.sd_file="$tmp/targets/e2e.json" --set monitoring.job=e2e)
case $mode in
  mpirun) OMP_NUM_THREADS=1 setsid "${mpirun[@]}" -np 2 "${train[@]}" > "$tmp/job.log" 2>&1 & ;;
  torchrun)
    store_port=$(free_port 20000 31000) || fail "no free port for the store"
    OMP_NUM_THREADS=1 WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$store_port \
      setsid bash -c 'RANK=0 LOCAL_RANK=0 "$@" & RANK=1 LOCAL_RANK=1 "$@" & wait' ranks "${train[@]}" \
      > "$tmp/job.log" 2>&1 &
    ;;
  tandem-launch)
    OMP_NUM_THREADS=1 setsid "$bin/tandem-launch" --nproc-per-node 2 --master-port 0 -- \
      "${train[@]}" > "$tmp/job.log" 2>&1 &
    ;;
  *) fail "mode '$mode': mpirun, torchrun or tandem-launch" ;;
esac
targets=2
[ "$mode" = tandem-launch ] && targets=1
job_group=$!
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
  --web.listen-address="127.0.0.1:$prometheus_port" > "$tmp/prometheus.log" 2>&1 &
prometheus_pid=$!

/usr/bin/python3 - "$prometheus_port" "$tmp/job.log" "$job_group" "$targets" << 'PY' || fail "see above"
import json, os, re, sys, time, urllib.parse, urllib.request

port, log, job_group, targets = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
deadline = time.time() + 150

def query(expr, at=None):
    params = {"query": expr}
    if at is not None:
        params["time"] = repr(at)
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
    except OSError:
        return None  # not up yet
    assert body["status"] == "success", body
    return body["data"]["result"]

def alive():
    try:
        os.killpg(job_group, 0)
        return True
    except ProcessLookupError:
        return False

# Every target up (one per rank, or the launcher's one for the node), and each rank's
# tandem_steps_total seen at two values, the later higher.
seen = {}
while True:
    assert time.time() < deadline, f"timed out; tandem_steps_total seen per rank: {seen}"
    assert alive(), "the job ended early"
    up = query('up{job="e2e"}') or []
    for series in query('tandem_steps_total{job="e2e"}') or []:
        seen.setdefault(series["metric"]["rank"], []).append(float(series["value"][1]))
    increased = {r: v for r, v in seen.items() if len(v) >= 2 and v[-1] > v[0]}
    if len(up) == targets and all(s["value"][1] == "1" for s in up) and set(increased) == {"0", "1"}:
        break
    time.sleep(1)
for rank in ("0", "1"):
    print(f"ok: rank {rank}: tandem_steps_total went {seen[rank][0]:.0f} -> {seen[rank][-1]:.0f}")
labels = query('tandem_build_info{job="e2e"}')[0]["metric"]
assert labels["rank"] in ("0", "1") and labels["node"] and labels["version"], labels
if targets == 1:
    target = up[0]["metric"]
    assert "rank" not in target and target["node"], f"the node target's labels: {target}"
    answered = query('tandem_launcher_rank_answered{job="e2e"}')
    assert sorted(s["metric"]["rank"] for s in answered) == ["0", "1"], answered
    print(f"ok: one target, the node endpoint {target['instance']} (labelled job and node, no "
          f"rank), holding both ranks' series")
else:
    print(f"ok: both targets up, labelled job, rank, node from the targets file ({labels['node']})")

# What the grid did (ep 2, no pipeline): both ranks sent expert rows both ways and no pipeline
# messages; one rank (the first replica) reports the expert load, top_k = 2 routed copies of
# every token it counted in the same scrape.
for series in query('tandem_alltoall_bytes_total{job="e2e"}'):
    assert float(series["value"][1]) > 0, f"no all-to-all bytes: {series}"
for series in query('tandem_pipeline_bytes_total{job="e2e"}'):
    assert float(series["value"][1]) == 0, f"pipeline bytes without a pipeline: {series}"
reporters = {s["metric"]["rank"] for s in query('tandem_expert_tokens_total{job="e2e"}')}
assert reporters == {"0"}, f"expert load reported by ranks {reporters}, wanted rank 0 alone"
routed = query('sum(tandem_expert_tokens_total{job="e2e", layer="1"}) '
               '- 2 * sum(tandem_tokens_total{job="e2e", rank="0"})')
assert float(routed[0]["value"][1]) == 0, f"layer 1's experts got {routed} tokens more than 2 per token"
print("ok: all-to-all bytes both ways on both ranks, no pipeline bytes, expert load from rank 0 = "
      "top_k x tokens")

# One scrape's step and loss per rank (one timestamp: the exposition is one snapshot), against
# the loss the job printed for that step (every rank holds the global batch's loss).
text = lambda: open(log).read()
for rank in ("0", "1"):
    samples = query(f'{{__name__=~"tandem_loss|tandem_step", job="e2e", rank="{rank}"}}')
    assert len(samples) == 2, samples
    stamps = {s["value"][0] for s in samples}
    assert len(stamps) == 1, f"rank {rank}: loss and step from different scrapes: {samples}"
    values = {s["metric"]["__name__"]: float(s["value"][1]) for s in samples}
    step, loss = int(values["tandem_step"]), values["tandem_loss"]
    printed = None
    while printed is None and time.time() < deadline:
        match = re.search(rf"^\[rank 0\] step {step}/\d+ \| loss ([0-9.]+) ", text(), re.M)
        printed = match and match.group(1)
        time.sleep(0.2)
    assert printed, f"the job never printed step {step}"
    assert f"{loss:.4f}" == printed, f"rank {rank}: tandem_loss {loss} at step {step}; printed {printed}"
    print(f"ok: rank {rank}: at step {step} Prometheus has tandem_loss {loss}; the job printed {printed}")
PY
echo "prometheus_e2e: all passed"
