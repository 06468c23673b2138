#!/usr/bin/env bash
# tandem-train under a real slurm: a one-node cluster (slurmctld and slurmd in the foreground, on
# 127.0.0.1, configuration, state and logs in a temporary directory) runs
#   1. srun -n 2 tandem-train (no MPI: UCX, the rendezvous store on rank 0 at an address tandem
#      computes from slurm's variables, here the port slurm reserved for the step) and
#      srun --mpi=pmix -n 2 tandem-train --set comm.world=mpi (Open MPI under slurm's PMIx);
#      both train on 2 ranks and give the losses of mpirun -np 2 (examples/mpirun.sh) to the bit;
#   2. inside an allocation: srun -n 1 (a step smaller than the allocation's tasks per node) and
#      examples/mpirun.sh (mpirun under salloc, whose SLURM_* variables its ranks inherit) train;
#      tandem-train started in the allocation's shell, no task of it, is refused at once;
#   3. sbatch examples/slurm/train.sbatch: stopped by what slurm sends before the time limit
#      (SIGTERM to the batch script), it passes the signal to every rank, which checkpoint at
#      the next step boundary and exit 4; it requeues itself, and the requeued job resumes from
#      that checkpoint and completes with the uninterrupted run's losses, to the bit.
# Every daemon, step and task carries a marker in its environment; whatever way the test ends,
# the trap ends each by its id and checks that none is left. Where the kernel allows it the test
# runs in its own pid namespace, so that even a SIGKILL of the test ends them all.
# Skips (exit 77) when not root or when the daemons cannot be started.
# Usage: slurm_cluster.sh PATH/TO/tandem-train   (run from the repository root)
set -u
train=$(realpath "$1")
skip() {
  echo "slurm_cluster: SKIP: $*"
  exit 77
}
[ "$(id -u)" -eq 0 ] || skip "not root (slurmd must run as root to start tasks)"
for cmd in slurmctld slurmd srun sbatch salloc scontrol scancel sinfo mpirun; do
  command -v "$cmd" > /dev/null || skip "$cmd not found (scripts/install-deps installs slurm-wlm)"
done
# The test runs in a pid namespace of its own (with its own /proc) where the kernel allows it:
# when the test inside ends, however, the kernel ends every process in it. This outer shell passes
# SIGTERM, SIGINT and SIGHUP on to the test inside (unshare ignores them), and if it is killed
# itself, unshare gets SIGKILL (setpriv --pdeathsig) and so does the namespace (--kill-child).
# TANDEM_SLURM_TEST_NAMESPACE=off runs the test without one (the trap alone ends the daemons).
if [ -z "${TANDEM_SLURM_TEST_NAMESPACE:-}" ] &&
  unshare --pid --fork --mount-proc --kill-child true 2> /dev/null; then
  TANDEM_SLURM_TEST_NAMESPACE=inside setpriv --pdeathsig KILL \
    unshare --pid --fork --mount-proc --kill-child bash "$0" "$@" &
  namespace=$! interrupted=0
  pass_on() {
    interrupted=1
    kill -TERM $(pgrep -P "$namespace") 2> /dev/null
  }
  trap pass_on INT TERM HUP
  rc=0
  wait "$namespace" || rc=$?
  while [ "$rc" -gt 128 ] && [ "$interrupted" -eq 1 ]; do
    interrupted=0 rc=0
    wait "$namespace" || rc=$?
  done
  exit "$rc"
fi
if [ "${TANDEM_SLURM_TEST_NAMESPACE:-}" = inside ]; then
  echo "slurm_cluster: in a pid namespace of its own"
else
  echo "slurm_cluster: in no pid namespace of its own: the trap ends the daemons, but not" \
    "after a SIGKILL"
fi
# slurm's client commands read SLURM_* from the environment: none of a job this test may run in.
for v in $(compgen -e | grep '^SLURM_'); do unset "$v"; done
tmp=$(mktemp -d /tmp/tandem-slurm.XXXXXX)
marker="TANDEM_SLURM_TEST_MARK=$tmp"
export SLURM_CONF=$tmp/slurm.conf OMP_NUM_THREADS=1
failures=0
fail() {
  echo "slurm_cluster: FAIL: $*"
  failures=$((failures + 1))
}
ok() { echo "slurm_cluster: ok: $*"; }
# Commands of the test run with the marker (slurm passes the environment on to every task).
run() { env "$marker" "$@"; }
ours() { grep -lF "$marker" /proc/[0-9]*/environ 2> /dev/null | cut -d/ -f3 | grep -vx "$$"; }

daemons=()
cleanup() {
  trap - EXIT INT TERM HUP
  if [ ${#daemons[@]} -gt 0 ]; then
    kill -0 "${daemons[0]}" 2> /dev/null && timeout 10 scancel --user=root > /dev/null 2>&1
    kill "${daemons[@]}" 2> /dev/null
    for _ in $(seq 50); do
      kill -0 "${daemons[@]}" 2> /dev/null || break
      sleep 0.1
    done
  fi
  # Steps and tasks outlive slurmd (slurmstepd is not its child): each by its id.
  local pids left
  pids=$(ours)
  [ -n "$pids" ] && kill -KILL $pids 2> /dev/null
  sleep 0.2
  left=$(ours)
  if [ -n "$left" ]; then
    echo "slurm_cluster: FAIL: processes of the test outlived it:"
    for pid in $left; do echo "  $pid $(tr '\0' ' ' < "/proc/$pid/cmdline")"; done
    failures=$((failures + 1))
  fi
  if [ "$failures" -ne 0 ]; then
    for log in slurmctld slurmd; do
      echo "--- last lines of $log.log"
      tail -n 15 "$tmp/$log.log" 2> /dev/null
    done
  fi
  rm -rf "$tmp"
  [ "$failures" -eq 0 ] || exit 1
}
trap cleanup EXIT
trap 'fail "interrupted"; exit 1' INT TERM HUP

# --- The cluster: one node, "localhost" at 127.0.0.1, on free ports.
# free_range LENGTH FIRST LAST: the first of LENGTH consecutive ports in [FIRST, LAST) that no
# socket of this machine holds (read from /proc/net/tcp{,6}). All ranges lie below the kernel's
# ephemeral ports (32768 on), so no outgoing connection takes one between this check and its use.
free_range() {
  local length=$1 first=$2 last=$3 base p free _ address
  local -A held=()
  while read -r _ address _; do
    [[ $address == *:* ]] && held[$((16#${address##*:}))]=1
  done < <(cat /proc/net/tcp /proc/net/tcp6 2> /dev/null)
  for _ in $(seq 100); do
    base=$((first + RANDOM % (last - first - length)))
    free=1
    for ((p = base; p < base + length; p++)); do
      [ -z "${held[$p]:-}" ] || { free=0; break; }
    done
    [ $free -eq 1 ] && { echo "$base"; return 0; }
  done
  return 1
}
# The daemons' two ports; the range from which slurm reserves ports for each step
# (MpiParams=ports), where tandem's store then listens; and, for steps without reserved ports
# (the sbatch job below), 29500 + job id % 1000: job ids start where 20 such ports are free.
ctld_port=$(free_range 2 20000 25000) &&
  resv_port=$(free_range 100 25000 29000) &&
  store_port=$(free_range 20 29500 30480) || skip "no free ports on this machine"
slurmd_port=$((ctld_port + 1))
first_job=$((1000 + store_port - 29500))
node=$(slurmd -C 2> /dev/null | head -n 1 | sed 's/^NodeName=[^ ]* //')
[ -n "$node" ] || skip "slurmd -C does not describe this machine"
mkdir -p "$tmp/state" "$tmp/spool" "$tmp/out"
cat > "$SLURM_CONF" << EOF
ClusterName=tandemtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
AuthInfo=cred_expire=10
CredType=cred/none
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MpiParams=ports=$resv_port-$((resv_port + 99))
ReturnToService=2
KillWait=5
MinJobAge=600
FirstJobId=$first_job
NodeName=localhost NodeAddr=127.0.0.1 $node State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
started=$EPOCHREALTIME
elapsed() { awk "BEGIN { printf \"%.1f\", $EPOCHREALTIME - $started }"; }
env "$marker" slurmctld -D -f "$SLURM_CONF" > "$tmp/slurmctld.out" 2>&1 &
daemons+=($!)
env "$marker" slurmd -D -N localhost -f "$SLURM_CONF" > "$tmp/slurmd.out" 2>&1 &
daemons+=($!)
state=""
for _ in $(seq 100); do
  for pid in "${daemons[@]}"; do
    kill -0 "$pid" 2> /dev/null && continue
    cat "$tmp/slurmctld.out" "$tmp/slurmd.out"
    skip "a slurm daemon exited at start (its output is above)"
  done
  state=$(sinfo -h -n localhost -o %T 2> /dev/null)
  [ "$state" = idle ] && break
  sleep 0.2
done
[ "$state" = idle ] || { fail "the node is '$state', not idle, 20 s after start"; exit 1; }
ok "slurmctld and slurmd up in $(elapsed) s (node: $node)"

# --- 1. srun, with and without MPI, against mpirun.
# Small and exact: 3 steps of tiny.toml, one thread per rank, one held-out batch.
args=(examples/configs/tiny.toml --set train.steps=3 --set train.eval_batches=1
  --set train.threads=1)
out=$tmp/out
scripts/prepare-data > /dev/null || { fail "scripts/prepare-data"; exit 1; }
# Runs "$@" with the marker and a 120 s limit, its output in $out/NAME.log; fails on an error.
train_run() {
  local name=$1
  shift
  local rc=0
  run timeout 120 "$@" > "$out/$name.log" 2>&1 || rc=$?
  if [ $rc -ne 0 ]; then
    fail "$name exited with $rc:"
    tail -n 20 "$out/$name.log"
    return 1
  fi
}
train_run single "$train" "${args[@]}" --summary-json "$out/single.json"
TANDEM_TRAIN=$train train_run mpirun examples/mpirun.sh 2 "${args[@]}" \
  --summary-json "$out/mpirun.json"
train_run srun srun -n 2 --overcommit "$train" "${args[@]}" --summary-json "$out/srun.json"
train_run srun_pmix srun --mpi=pmix -n 2 --overcommit "$train" "${args[@]}" \
  --set comm.world=mpi --summary-json "$out/srun_pmix.json"
# The log names the ranks, who started them and how they joined, and the grid.
grid="grid: pp 1 × dp 2 (ep 1, expert dp 2)"
expect_log() {  # NAME TEXT...: every TEXT is a line (or part of one) of NAME's log
  local name=$1 text
  shift
  for text in "$@"; do
    grep -qF -- "$text" "$out/$name.log" || fail "$name's log lacks '$text'"
  done
}
expect_log srun \
  "1 threads per rank, 2 ranks (launcher slurm, UCX; rendezvous store on rank 0 at localhost:" \
  "host: first of SLURM_STEP_NODELIST, port: first of SLURM_STEP_RESV_PORTS)" "$grid" \
  "summary: 3 steps"
expect_log srun_pmix "1 threads per rank, 2 ranks (launcher slurm, MPI)" "$grid" "summary: 3 steps"
expect_log mpirun "1 threads per rank, 2 ranks (launcher Open MPI, MPI)" "$grid" "summary: 3 steps"

# --- 2. Inside an allocation of 2 tasks on the node: a 1-task step (its SLURM_NTASKS_PER_NODE is
# the allocation's 2), and mpirun, whose ranks inherit salloc's SLURM_* variables.
train_run salloc_srun salloc -n 2 --ntasks-per-node=2 \
  srun -n 1 "$train" "${args[@]}" --summary-json "$out/salloc_srun.json"
TANDEM_TRAIN=$train train_run salloc_mpirun salloc -n 2 examples/mpirun.sh 2 "${args[@]}" \
  --summary-json "$out/salloc_mpirun.json"
expect_log salloc_srun "tandem-train: examples/configs/tiny.toml, 1 threads" "summary: 3 steps"
expect_log salloc_mpirun "2 ranks (launcher Open MPI, MPI)" "$grid" "summary: 3 steps"
# tandem-train started in the allocation's shell, not by srun, is no rank of the job: refused at
# once (exit 2) instead of waiting for a rank 1 that never comes.
run timeout 60 salloc -n 2 "$train" "${args[@]}" > "$out/salloc_shell.log" 2>&1
rc=$?
[ $rc -eq 2 ] || fail "tandem-train in salloc's shell exited with $rc, not 2"
expect_log salloc_shell "not of a task started by srun" "start the job's 2 ranks with srun"

# --- 3. sbatch examples/slurm/train.sbatch, made tiny through sbatch's options (they override
# the script's #SBATCH lines) and the script's TANDEM_* variables.
# tandem-train itself, 60 steps with a per-step log: the SIGTERM comes after a few steps, every
# rank checkpoints at the next step boundary and exits 4, the script requeues, and the requeued
# run resumes from that checkpoint (its first step record is the checkpoint's step + 1) and ends
# with the losses of the uninterrupted 2-rank run, to the bit.
long=(--set train.steps=60 --set train.eval_interval=0)
TANDEM_TRAIN=$train train_run mpirun60 examples/mpirun.sh 2 "${args[@]}" "${long[@]}" \
  --log-jsonl "$out/mpirun60.jsonl"
job=$(run env TANDEM_TRAIN="$train" TANDEM_CONFIG=examples/configs/tiny.toml \
  TANDEM_CHECKPOINT_DIR="$out/checkpoints" SLURM_RESV_PORTS=0 \
  sbatch --parsable --nodes=1 --ntasks-per-node=2 --gpus-per-node=0 --cpus-per-task=1 \
  --time=10 --output="$out/job-%j.out" examples/slurm/train.sbatch \
  "${args[@]:1}" "${long[@]}" --log-jsonl "$out/sbatch.jsonl" --summary-json "$out/sbatch.json")
job_log=$out/job-$job.out
job_field() { scontrol show job "$job" 2> /dev/null | grep -o "$1=[^ ]*" | cut -d= -f2; }
# wait_until SECONDS COMMAND...: polls COMMAND every 0.2 s; fails (returns 1) at the deadline.
wait_until() {
  local deadline=$(($(date +%s) + $1))
  shift
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}
both_ranks_wait() { [ -f "$out/sbatch.jsonl" ] && [ "$(wc -l < "$out/sbatch.jsonl")" -ge 3 ]; }
requeued() { [ "$(job_field Restarts)" = 1 ]; }
finished() {
  [[ "$(job_field JobState)" =~ ^(COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY)$ ]]
}
if [ -z "$job" ]; then
  fail "sbatch did not submit the job"
elif ! wait_until 30 both_ranks_wait; then
  fail "job $job's ranks did not train 3 steps (state $(job_field JobState))"
else
  # What --signal=B:TERM@120 does 120 s before the time limit: SIGTERM to the batch script only.
  scancel --batch --signal=TERM "$job"
  if ! wait_until 30 requeued; then
    fail "job $job was not requeued after SIGTERM (state $(job_field JobState)," \
      "$(job_field Restarts) restarts)"
  else
    # slurm holds a requeued job back for its credential lifetime (AuthInfo=cred_expire above:
    # 10 s, not the default 120), and slurmd refuses to start it again before then ("Job
    # credential revoked"), so the test waits instead of pulling its start time forward.
    wait_until 60 finished || fail "the requeued job $job did not finish in 60 s" \
      "(state $(job_field JobState), reason $(job_field Reason))"
  fi
fi
if [ -n "$job" ]; then
  failures_before=$failures
  state=$(job_field JobState) code=$(job_field ExitCode)
  [ "$state" = COMPLETED ] && [ "$code" = 0:0 ] || fail "job $job ended $state, exit code $code"
  # The first attempt: the signal passed on to both ranks, exit 4, requeue.
  for text in "train.sbatch: job $job (restart 0)" \
    "SIGTERM (the time limit is near): asking every rank to checkpoint and stop" \
    "tandem-train: SIGTERM: stopping at the next step boundary" "stopped on request (SIGTERM) after step" \
    "tandem-train stopped at a checkpoint (exit 4); requeueing job $job" \
    "train.sbatch: job $job (restart 1)" \
    "(launcher slurm, UCX; rendezvous store on rank 0 at localhost:$((29500 + job % 1000));" \
    "port: 29500 + SLURM_JOB_ID % 1000" "$grid" "resuming from checkpoint $out/checkpoints/step-" \
    "summary: 60 steps" \
    "train.sbatch: tandem-train exited with 0"; do
    grep -qF -- "$text" "$job_log" || fail "job $job's output lacks '$text'"
  done
  if [ $failures -eq "$failures_before" ]; then
    grep -E "^(train.sbatch: (job|SIGTERM|tandem-train)|\[rank 0\] (summary|stopped|resuming))" "$job_log"
  else
    echo "--- job $job's output"
    cat "$job_log"
  fi
fi

# --- The losses. With 2 data-parallel ranks the only arithmetic between ranks is the sum of two
# numbers (gradients, losses, the gradient norm's partial sums), and a + b == b + a exactly in
# IEEE arithmetic, so every 2-rank launch gives the bits of mpirun; the 1-task step is a single
# process. Against one process only the order of fp32 sums differs (each rank sums its half of
# the batch): 2e-5 relative, the bound of tests/multirank/parallel_equivalence.
/usr/bin/python3 - "$out" << 'PY' || fail "losses differ (above)"
import json, os, sys
out = sys.argv[1]
def run(name):
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        return None
    s = json.load(open(path))
    return s["losses"] + [s["final_eval_loss"]]
ok = True
def check(name, reference, tolerance):
    global ok
    got, want = run(name), run(reference)
    if got is None or want is None:
        print(f"  {name} or {reference} wrote no summary"); ok = False; return
    worst = max(abs(a - b) / abs(b) for a, b in zip(got, want))
    good = len(got) == len(want) == 4 and worst <= tolerance
    ok &= good
    print(f"  {name:14} vs {reference:7}: largest relative difference {worst:.2e} "
          f"(bound {tolerance:.0e}) {'ok' if good else 'FAIL'}")
for name in ["srun", "srun_pmix", "salloc_mpirun"]:
    check(name, "mpirun", 0.0)
# sbatch: stopped, checkpointed, requeued and resumed; every step logged once per attempt.
def steps(path):
    return [json.loads(l) for l in open(path) if '"loss"' in l]
try:
    ref = {r["step"]: r["loss"] for r in steps(os.path.join(out, "mpirun60.jsonl"))}
    got = steps(os.path.join(out, "sbatch.jsonl"))
    first = [r for r in got if r["restart"] == 0]
    second = [r for r in got if r["restart"] == 1]
    k = first[-1]["step"]
    assert [r["step"] for r in first] == list(range(1, k + 1)), "attempt 0's steps"
    assert second and second[0]["step"] <= k + 1 and second[-1]["step"] == 60, "attempt 1's steps"
    resumed_at = second[0]["step"] - 1
    bad = [r for r in got if r["loss"] != ref[r["step"]]]
    assert not bad, f"losses differ from mpirun's: {bad[:2]}"
    print(f"  sbatch: stopped after step {k}, requeued, resumed from step {resumed_at}'s checkpoint; "
          f"{len(got)} step records equal mpirun's to the bit")
except Exception as e:
    print(f"  sbatch: FAIL: {e!r}"); ok = False
check("salloc_srun", "single", 0.0)
check("mpirun", "single", 2e-5)
sys.exit(0 if ok else 1)
PY
[ $failures -eq 0 ] && ok "srun (UCX and PMIx), salloc + srun -n 1, salloc + mpirun and sbatch" \
  "with a requeue trained, with the losses of mpirun -np 2"
echo "slurm_cluster: $(elapsed) s from the daemons' start"
