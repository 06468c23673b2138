#!/usr/bin/env bash
# What the control plane costs a training step. tiny.toml (the demo's model) trains the same
# steps with control.port = 0 (off), with the service on and no client, and with the service on
# and a `tandemctl watch` client attached for the whole run (one status message per step);
# in one process and on 2 ranks (mpirun). The modes are interleaved, in a rotating order, over
# REPS repetitions. Three measures, each per repetition against the same repetition's "off" run
# and given as a mean with its 95% interval over repetitions:
#  - wall: the median step time (the first 5 steps left out), which a shared machine's other load
#    makes noisy;
#  - CPU: the job's user + system CPU seconds (every rank and thread, from wait4), as extra
#    milliseconds per step: what the service's threads and the training thread's share of it
#    cost, hardly moved by other processes' load (tandemctl's own CPU is its process's, apart);
#  - the service's own threads (gRPC's, by name), their CPU time from /proc's schedstat (ns)
#    sampled every 100 ms while the job runs, per step: the part of the CPU cost that is the
#    server's and that the noise above hides;
#  - in the step, from the run summaries: the training thread's time in the step boundary's
#    agreement (one all-reduce of 6 + world doubles, there with control off too) and in
#    publishing the status (with control on).
# Usage: bench/control_overhead.sh BUILD [REPS] [STEPS]   (from the repository root)
set -euo pipefail
build=$1
reps=${2:-5}
steps=${3:-60}
bin=$build/bin
py=/usr/bin/python3
tmp=$(mktemp -d)
groups=()
cleanup() {
  for g in "${groups[@]}"; do kill -9 -- "-$g" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
scripts/prepare-data >/dev/null
mpirun=(mpirun --allow-run-as-root --oversubscribe --mca mpi_yield_when_idle 1 -x OMP_NUM_THREADS=1)
common=(examples/configs/tiny.toml --set train.steps="$steps" --set train.eval_interval=0
  --set train.eval_batches=1 --set train.threads=1)
printf 'bench-token\n' > "$tmp/token"
chmod 600 "$tmp/token"
free_port() { $py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

run() {  # run RANKS MODE REP
  local ranks=$1 mode=$2 rep=$3 name="$tmp/r$1-$2-$3" port flags=() launch=()
  port=$(free_port)
  [ "$mode" = off ] || flags=(--set control.port="$port" --set control.token_file="$tmp/token")
  [ "$ranks" = 1 ] || launch=("${mpirun[@]}" -np "$ranks")
  # wait4 gives the CPU time of the job and of every process it waited for (mpirun's ranks).
  setsid $py -c 'import os, subprocess, sys
p = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(p.pid, 0)
open(sys.argv[1], "w").write(f"{usage.ru_utime + usage.ru_stime}\n")
sys.exit(os.waitstatus_to_exitcode(status))' "$name.cpu" "${launch[@]}" "$bin/tandem-train" \
    "${common[@]}" "${flags[@]}" --log-jsonl "$name.jsonl" --summary-json "$name.json" \
    > "$name.log" 2>&1 &
  local pid=$!
  groups+=($pid)
  # The gRPC threads of every process in the job's session (mpirun's ranks have groups of their
  # own), their CPU nanoseconds at the last sample before the job ended.
  $py -c 'import os, sys, time
session, out = int(sys.argv[1]), sys.argv[2]
names = ("grpc", "default-executo", "resolver-execut", "event_engine", "timer_manager")
seen = {}
while True:
    alive = False
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[3]) != session:
                continue
            alive = True
            for tid in os.listdir(f"/proc/{pid}/task"):
                comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
                if comm.startswith(names):
                    seen[(pid, tid)] = int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
        except (OSError, IndexError, ValueError):
            pass
    if not alive:
        break
    time.sleep(0.1)
open(out, "w").write(f"{sum(seen.values())}\n")' "$pid" "$name.svc" &
  local sampler=$!
  local watcher=""
  if [ "$mode" = watch ]; then
    # Attached from the first steps to the end: the stream ends with the job.
    until "$bin/tandemctl" --addr "127.0.0.1:$port" --timeout-s 1 status > /dev/null 2>&1; do
      kill -0 $pid 2>/dev/null || break
      sleep 0.05
    done
    "$bin/tandemctl" --addr "127.0.0.1:$port" watch > "$name.watch" 2>&1 &
    watcher=$!
  fi
  wait $pid || { tail -5 "$name.log"; exit 1; }
  [ -z "$watcher" ] || wait $watcher || true
  wait $sampler
}

for ranks in 1 2; do
  modes=(off on watch)
  for ((rep = 0; rep < reps; rep++)); do
    for ((i = 0; i < 3; i++)); do
      run "$ranks" "${modes[(rep + i) % 3]}" "$rep"
    done
  done
done

$py - "$tmp" "$reps" <<'PY'
import json, math, statistics, sys
d, reps = sys.argv[1], int(sys.argv[2])
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23,
       11: 2.20, 12: 2.18, 13: 2.16, 14: 2.14, 15: 2.13, 19: 2.09}
def step_times(name):
    return [json.loads(l)["step_seconds"] for l in open(f"{d}/{name}.jsonl") if '"loss"' in l][5:]
def service_cpu(name):
    return int(open(f"{d}/{name}.svc").read()) / 1e9
def cpu(name):
    return float(open(f"{d}/{name}.cpu").read())
def interval(xs):
    m = statistics.mean(xs)
    half = T95.get(len(xs) - 1, 2.0) * statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else math.nan
    return m, m - half, m + half
for ranks in (1, 2):
    print(f"== {ranks} rank{'s' if ranks > 1 else ''}: tiny.toml, {reps} repetitions")
    off = [f"r{ranks}-off-{r}" for r in range(reps)]
    wall = [statistics.median(step_times(n)) for n in off]
    steps = len(step_times(off[0])) + 5
    cpu_step = [cpu(n) / steps for n in off]
    print(f"off: median step {statistics.mean(wall) * 1e3:.1f} ms (repetitions "
          f"{min(wall) * 1e3:.1f}..{max(wall) * 1e3:.1f}), CPU {statistics.mean(cpu_step) * 1e3:.1f} ms "
          f"per step (all threads and ranks, startup included)")
    for mode, label in (("on", "on, no client"), ("watch", "on + tandemctl watch")):
        names = [f"r{ranks}-{mode}-{r}" for r in range(reps)]
        w = interval([statistics.median(step_times(n)) / wall[r] - 1 for r, n in enumerate(names)])
        c = interval([(cpu(n) - cpu(off[r])) / steps for r, n in enumerate(names)])
        cf = statistics.mean(cpu_step)
        print(f"{label:21}: wall {w[0] * 100:+.2f}% ({w[1] * 100:+.2f}%..{w[2] * 100:+.2f}%); "
              f"CPU {c[0] * 1e3:+.3f} ms a step ({c[1] * 1e3:+.3f}..{c[2] * 1e3:+.3f}) = "
              f"{c[0] / cf * 100:+.2f}% ({c[1] / cf * 100:+.2f}%..{c[2] / cf * 100:+.2f}%)")
        svc = statistics.mean(service_cpu(n) / steps for n in names)
        print(f"{'':21}  the service's threads: {svc * 1e3:.3f} ms CPU a step = {svc / cf * 100:.3f}% "
              f"of the job's CPU per step")
    for mode in ("off", "on", "watch"):
        b = [json.load(open(f"{d}/r{ranks}-{mode}-{r}.json"))["step_boundary"] for r in range(reps)]
        agree = statistics.mean(x["agreement_seconds"] for x in b)
        publish = statistics.mean(x["status_publish_seconds"] for x in b)
        step = statistics.mean(statistics.mean(step_times(f"r{ranks}-{mode}-{r}")) for r in range(reps))
        print(f"  {mode:5} in the step: agreement {agree * 1e6:.1f} us ({b[0]['agreement_doubles']} "
              f"doubles), status publish {publish * 1e6:.1f} us = {publish / step * 100:.3f}% of a step")
PY
