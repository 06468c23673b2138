#!/usr/bin/env bash
# tandem-launch as a user sees it: the torchrun environment and prefixed output, a restart after
# a retryable failure (exit 3, a rank killed) and none after a configuration error (exit 2) or
# another error (exit 1), restarts that run out, SIGTERM forwarded and no process of the job left
# after the launcher ends — even when the launcher itself is killed with SIGKILL — and a real
# 2-rank tandem-train run under it.
# Usage: launch_test.sh PATH/TO/tandem-launch PATH/TO/tandem-train
set -u
source "$(dirname "$0")/../multirank/torchrun_ranks.sh"
launch=$1 train=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
failures=0
fail() { echo "launch_test: FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "launch_test: ok: $*"; }
# A job's processes carry a marker in their environment; none may be left once the launcher ends.
marker=tandem_launch_test_$$
left_over() { grep -l "$marker" /proc/[0-9]*/environ 2>/dev/null | grep -v "/proc/$$/" | wc -l; }

# 1. Environment, prefixes, per-rank logs.
out=$(MARKER=$marker "$launch" --nproc-per-node 3 --log-dir "$dir/logs" -- bash -c \
  'echo "rank $RANK local $LOCAL_RANK of $WORLD_SIZE/$LOCAL_WORLD_SIZE group $GROUP_RANK at $MASTER_ADDR:$MASTER_PORT try $TANDEM_RESTART_COUNT"' 2>&1)
rc=$?
[ $rc -eq 0 ] || fail "a job of 3 ranks that all exit 0 ended with $rc"
for r in 0 1 2; do
  echo "$out" | grep -qx "\[rank $r\] rank $r local $r of 3/3 group 0 at 127.0.0.1:29500 try 0" ||
    fail "rank $r's line is missing or wrong: $out"
  grep -qx "rank $r local $r of 3/3 group 0 at 127.0.0.1:29500 try 0" "$dir/logs/rank$r.log" ||
    fail "rank $r's log lacks its line"
done
[ $failures -eq 0 ] && ok "environment, prefixed output and per-rank logs"

# 2. A retryable failure (rank 1 exits 3 in the first attempt) restarts every rank.
out=$("$launch" --nproc-per-node 2 --max-restarts 2 --log-dir "$dir/retry" -- bash -c \
  '[ $RANK = 1 ] && [ $TANDEM_RESTART_COUNT = 0 ] && exit 3; [ $RANK = 0 ] && [ $TANDEM_RESTART_COUNT = 0 ] && sleep 60; echo "done try $TANDEM_RESTART_COUNT"' 2>&1)
rc=$?
if [ $rc -ne 0 ]; then fail "exit $rc after a retryable failure and a good restart: $out"
elif ! echo "$out" | grep -q "tandem-launch: rank 1 on .*: exit 3 after .*restarting every rank"; then fail "no restart message: $out"
elif [ "$(echo "$out" | grep -c 'done try 1')" -ne 2 ]; then fail "both ranks should finish in attempt 1: $out"
elif ! python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["failed_rank"]==1 and r["exit_code"]==3 and r["restarting"]' "$dir/retry/attempt-0.json"; then fail "attempt-0.json does not name rank 1's exit 3"
else ok "exit 3 restarts every rank; the record names the failed rank"; fi

# 3. A configuration error (exit 2) and another error (exit 1) are not restarted.
for code in 2 1; do
  start=$SECONDS
  out=$("$launch" --nproc-per-node 2 --max-restarts 5 -- bash -c "[ \$RANK = 0 ] && exit $code; sleep 60" 2>&1)
  rc=$?
  if [ $rc -ne $code ]; then fail "exit $rc (wanted $code, no restart): $out"
  elif [ "$(echo "$out" | grep -c 'tandem-launch: attempt')" -ne 1 ]; then fail "exit $code was restarted: $out"
  elif [ $((SECONDS - start)) -ge 30 ]; then fail "the other rank was not stopped at once after exit $code"
  else ok "exit $code ends the job with $code, without a restart"; fi
done
echo "$out" | grep -q "an error a restart would repeat" || fail "no reason given for not restarting exit 1"

# 4. Restarts run out: the job ends with the last failure's code.
out=$("$launch" --nproc-per-node 1 --max-restarts 2 -- bash -c 'exit 3' 2>&1)
rc=$?
[ $rc -eq 3 ] && [ "$(echo "$out" | grep -c 'tandem-launch: attempt')" -eq 3 ] &&
  echo "$out" | grep -q "no restarts left (--max-restarts 2)" && ok "3 attempts, then exit 3" ||
  fail "restarts running out: exit $rc: $out"

# 5. A rank killed by a signal is retryable.
out=$("$launch" --nproc-per-node 2 --max-restarts 1 -- bash -c \
  '[ $RANK = 1 ] && [ $TANDEM_RESTART_COUNT = 0 ] && kill -KILL $$; exit 0' 2>&1)
rc=$?
[ $rc -eq 0 ] && echo "$out" | grep -q "rank 1 on .*: killed by SIGKILL" && ok "a rank killed by SIGKILL is restarted" ||
  fail "a killed rank: exit $rc: $out"

# 6. SIGTERM to the launcher reaches every rank (they may checkpoint), and nothing is left.
MARKER=$marker "$launch" --nproc-per-node 3 -- bash -c \
  'trap "echo got TERM; exit 0" TERM; echo ready; while :; do sleep 0.1; done' > "$dir/term.out" 2>&1 &
pid=$!
wait_for_line "$dir/term.out" "\[rank 2\] ready" && sleep 0.3
kill -TERM $pid
wait $pid
rc=$?
sleep 0.2
if [ $rc -ne 143 ]; then fail "a launcher stopped by SIGTERM exited $rc (wanted 143)"; cat "$dir/term.out"
elif [ "$(grep -c 'got TERM' "$dir/term.out")" -ne 3 ]; then fail "not every rank got SIGTERM"; cat "$dir/term.out"
elif [ "$(left_over)" -ne 0 ]; then fail "processes of the job outlived the launcher"
else ok "SIGTERM forwarded to every rank, exit 143, nothing left"; fi

# 7. A rank that ignores SIGTERM is killed after the grace period.
start=$SECONDS
MARKER=$marker "$launch" --nproc-per-node 2 --grace-period-s 1 -- bash -c \
  '[ $RANK = 0 ] && exit 3; trap "" TERM; while :; do sleep 0.1; done' > "$dir/grace.out" 2>&1
rc=$?
[ $rc -eq 3 ] && [ $((SECONDS - start)) -lt 10 ] && [ "$(left_over)" -eq 0 ] &&
  ok "a rank deaf to SIGTERM is killed after the grace period" || fail "grace period: exit $rc after $((SECONDS - start)) s"

# 8. The launcher killed with SIGKILL takes its ranks with it, and what they started (a wrapper
# script's long-lived child): the guardian ends every rank's process group.
MARKER=$marker "$launch" --nproc-per-node 2 -- bash -c 'sleep 60 & echo ready; wait' > "$dir/kill.out" 2>&1 &
pid=$!
wait_for_line "$dir/kill.out" "\[rank 1\] ready"
kill -KILL $pid
wait $pid 2>/dev/null
for _ in $(seq 50); do [ "$(left_over)" -eq 0 ] && break; sleep 0.1; done
[ "$(left_over)" -eq 0 ] && ok "SIGKILL of the launcher ends its ranks" || fail "ranks outlived a killed launcher"

# 9. Bad flags and a program that cannot run are usage errors, before any rank starts.
"$launch" --nproc-per-node=0 -- true > "$dir/usage.out" 2>&1
[ $? -eq 2 ] && grep -q "nproc-per-node = '0': expected an integer from 1" "$dir/usage.out" &&
  ok "a bad flag is refused with exit 2" || fail "bad flag: $(cat "$dir/usage.out")"
"$launch" --max-restarts 3 -- "$dir/no-such-program" > "$dir/usage.out" 2>&1
[ $? -eq 2 ] && grep -q "the program '$dir/no-such-program' is not an executable file" "$dir/usage.out" &&
  ! grep -q "attempt" "$dir/usage.out" && ok "a program that cannot run: exit 2, nothing started" ||
  fail "missing program: $(cat "$dir/usage.out")"

# 10. SIGINT reaches the ranks as SIGINT, and a stop during a failure still names the failure.
MARKER=$marker "$launch" --nproc-per-node 2 --log-dir "$dir/int" -- bash -c \
  'trap "echo got INT; exit 0" INT; echo ready; while :; do sleep 0.1; done' > "$dir/int.out" 2>&1 &
pid=$!
wait_for_line "$dir/int.out" "\[rank 1\] ready" && sleep 0.3
kill -INT $pid
wait $pid
rc=$?
[ $rc -eq 130 ] && [ "$(grep -c 'got INT' "$dir/int.out")" -eq 2 ] && ok "SIGINT forwarded as SIGINT, exit 130" ||
  { fail "SIGINT: exit $rc"; cat "$dir/int.out"; }

# 11. tandem-train on 2 ranks under the launcher (UCX, the store on rank 0).
port=$(free_port)
out=$(OMP_NUM_THREADS=1 "$launch" --nproc-per-node 2 --master-port "$port" -- "$train" \
  examples/configs/tiny.toml --set train.steps=3 --set train.eval_batches=1 2>&1)
rc=$?
[ $rc -eq 0 ] && echo "$out" | grep -q "^\[rank 0\] .*summary: 3 steps" && ok "tandem-train, 2 ranks" ||
  { fail "tandem-train under the launcher: exit $rc"; echo "$out" | tail -20; }

[ $failures -eq 0 ] && echo "launch_test: PASS" || echo "launch_test: $failures failures"
exit $((failures > 0))
