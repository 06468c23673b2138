#!/usr/bin/env bash
# A hung tandem-train rank under tandem-launch: rank 1 of a 2-rank job is stopped (SIGSTOP) in the
# middle of training. Its stack is recorded (gdb: a frame of main or of tandem), the failure record
# names it, its host and the stack file, the job is restarted and finishes, and no process is
# left. Twice, for the two ways the launcher learns of it:
#   frozen  the heartbeat timeout (2 s) passes while rank 0 is still reporting its collective
#           timeout (comm.timeout_s 1, then up to 4 s waiting for rank 1's record);
#   stale   rank 0's collective timeout ends it first (exit 3) while the heartbeat timeout (20 s)
#           is far away; rank 1's heartbeat is stale (over 3 intervals) when the attempt stops.
# Usage: hung_rank_test.sh PATH/TO/tandem-launch PATH/TO/tandem-train
set -u
here=$(dirname "$0")
source "$here/../multirank/torchrun_ranks.sh"
source "$here/job_processes.sh"
launch=$1 train=$(realpath "$2")
dir=$(mktemp -d)
launcher_pid=""
cleanup() { [ -n "$launcher_pid" ] && kill -KILL "$launcher_pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
failures=0
fail() { echo "hung_rank_test: FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "hung_rank_test: ok: $*"; }
marker=tandem_hung_rank_test_$$
export OMP_NUM_THREADS=1
# Attempt 0 trains for ever (the test stops a rank in it); the restart trains 3 steps.
printf '%s\n' '#!/usr/bin/env bash' \
  'steps=3; [ "$TANDEM_RESTART_COUNT" = 0 ] && steps=100000' \
  "exec $train examples/configs/tiny.toml --set train.log_interval=1 --set train.steps=\$steps --set train.eval_batches=1 --set comm.timeout_s=1" \
  > "$dir/train_once.sh"
chmod +x "$dir/train_once.sh"

for way in frozen stale; do
  timeout_s=$([ $way = frozen ] && echo 2 || echo 20)
  logs=$dir/$way
  MARKER=$marker "$launch" --nproc-per-node 2 --master-port 0 --max-restarts 1 --log-dir "$logs" \
    --heartbeat-timeout-s "$timeout_s" --heartbeat-interval-s 0.2 -- "$dir/train_once.sh" \
    > "$dir/$way.out" 2>&1 &
  launcher_pid=$!
  wait_for_line "$dir/$way.out" "step 2/100000" || fail "$way: attempt 0 did not train"
  rank1=$(rank_pid "$marker" 1)
  start=$SECONDS
  kill -STOP "$rank1"
  wait $launcher_pid
  rc=$?
  launcher_pid=""
  took=$((SECONDS - start))
  stack=$logs/stack-attempt0-rank1.txt
  record=$logs/attempt-0.json
  check_record='import json, socket, sys
r = json.load(open(sys.argv[1])); way, stack = sys.argv[2], sys.argv[3]
h = [x for x in r["frozen_ranks"] if x["rank"] == 1]
assert h and h[0]["host"] == socket.gethostname() and h[0]["stack_file"] == stack, r
if way == "frozen":
    assert r["failed_rank"] == 1 and r["frozen"] and h[0]["frozen"], r
else:
    assert r["failed_rank"] == 0 and r["exit_code"] == 3 and not h[0]["frozen"], r
assert r["restarting"], r'
  if [ $rc -ne 0 ]; then fail "$way: the job ended with $rc"; tail -20 "$dir/$way.out"
  elif ! grep -q "^\[rank 0\] .*summary: 3 steps" "$dir/$way.out"; then fail "$way: the restart did not finish"; tail -20 "$dir/$way.out"
  elif ! grep -q "in main ()\|in tandem::" "$stack" 2>/dev/null; then fail "$way: no frame of main or tandem in $stack: $(head -c 3000 "$stack" 2>&1)"
  elif ! python3 -c "$check_record" "$record" "$way" "$stack"; then fail "$way: the record: $(cat "$record")"
  elif [ "$(left_over "$marker")" -ne 0 ]; then fail "$way: processes of the job were left"
  else ok "$way: rank 1's stack recorded and named, the job restarted and finished ($took s after the stop)"; fi
done

[ $failures -eq 0 ] && echo "hung_rank_test: PASS" || echo "hung_rank_test: $failures failures"
exit $((failures > 0))
