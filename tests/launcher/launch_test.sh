#!/usr/bin/env bash
# tandem-launch as a user sees it: the torchrun environment and prefixed output, a restart after
# a retryable failure (exit 3, a rank killed) and none after a configuration error (exit 2) or
# another error (exit 1), restarts that run out, exit 4 (stopped on request) taken as no failure,
# the survivors of a failure ended with SIGINT (never SIGTERM, which asks for a checkpoint), the
# operator's SIGTERM and SIGINT forwarded as they came, no process of the job left after the
# launcher ends — even when the launcher itself is killed with SIGKILL — heartbeats (a slow rank,
# a frozen one, one exiting, one that never beats; each rank's socket its own), flags and
# timeouts out of order refused, and real 2-rank tandem-train runs under it, on the store the
# launcher serves: killing rank 0 does not take the store with it.
# Usage: launch_test.sh PATH/TO/tandem-launch PATH/TO/tandem-train
set -u
here=$(dirname "$0")
source "$here/../multirank/torchrun_ranks.sh"
source "$here/job_processes.sh"
launch=$1 train=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
failures=0
fail() { echo "launch_test: FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "launch_test: ok: $*"; }
# A job's processes carry a marker in their environment; none may be left once the launcher ends
# (left_over MARKER counts them).
marker=tandem_launch_test_$$
# Every launch serves a store; port 0 takes any free one, so no test can clash with another.
L=("$launch" --master-port 0)
beater=$here/heartbeat_program.py

# 1. Environment, prefixes, per-rank logs; the store is the launcher's, on MASTER_PORT, with a
# random token.
port=$(free_port)
out=$(MARKER=$marker "$launch" --nproc-per-node 3 --master-port "$port" --log-dir "$dir/logs" -- bash -c \
  'echo "rank $RANK local $LOCAL_RANK of $WORLD_SIZE/$LOCAL_WORLD_SIZE group $GROUP_RANK at $MASTER_ADDR:$MASTER_PORT try $TANDEM_RESTART_COUNT"; echo "store $TANDEM_STORE_SERVED_BY_LAUNCHER:$TANDEM_STORE_PORT token $TANDEM_STORE_TOKEN"' 2>&1)
rc=$?
[ $rc -eq 0 ] || fail "a job of 3 ranks that all exit 0 ended with $rc"
for r in 0 1 2; do
  echo "$out" | grep -qx "\[rank $r\] rank $r local $r of 3/3 group 0 at 127.0.0.1:$port try 0" ||
    fail "rank $r's line is missing or wrong: $out"
  grep -qx "rank $r local $r of 3/3 group 0 at 127.0.0.1:$port try 0" "$dir/logs/rank$r.log" ||
    fail "rank $r's log lacks its line"
done
echo "$out" | grep -q "^tandem-launch: serving the rendezvous store on 127.0.0.1:$port for every attempt" ||
  fail "the launcher does not say it serves the store: $out"
[ "$(echo "$out" | grep -E "^\[rank [0-2]\] store 1:$port token [0-9a-f]{32}$" | sed 's/.*token //' | sort -u | wc -l)" -eq 1 ] ||
  fail "the ranks are not told the launcher serves the store, or lack one shared token: $out"
token1=$(echo "$out" | sed -n 's/^\[rank 0\] store .* token //p')
token2=$("${L[@]}" -- bash -c 'echo "$TANDEM_STORE_TOKEN"' 2>/dev/null | sed 's/^\[rank 0\] //')
[ -n "$token1" ] && [ "$token1" != "$token2" ] || fail "the store token is not random per run: '$token1' and '$token2'"
TANDEM_STORE_TOKEN=given "${L[@]}" -- bash -c 'echo "token $TANDEM_STORE_TOKEN"' 2>&1 | grep -qx "\[rank 0\] token given" ||
  fail "TANDEM_STORE_TOKEN from the environment is not the one handed to the ranks"
[ $failures -eq 0 ] && ok "environment, prefixed output, per-rank logs, the launcher's store and its token"

# 2. A retryable failure (rank 1 exits 3 in the first attempt) restarts every rank.
out=$("${L[@]}" --nproc-per-node 2 --max-restarts 2 --log-dir "$dir/retry" -- bash -c \
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
  out=$("${L[@]}" --nproc-per-node 2 --max-restarts 5 -- bash -c "[ \$RANK = 0 ] && exit $code; sleep 60" 2>&1)
  rc=$?
  if [ $rc -ne $code ]; then fail "exit $rc (wanted $code, no restart): $out"
  elif [ "$(echo "$out" | grep -c 'tandem-launch: attempt')" -ne 1 ]; then fail "exit $code was restarted: $out"
  elif [ $((SECONDS - start)) -ge 30 ]; then fail "the other rank was not stopped at once after exit $code"
  else ok "exit $code ends the job with $code, without a restart"; fi
done
echo "$out" | grep -q "an error a restart would repeat" || fail "no reason given for not restarting exit 1"

# 4. Restarts run out: the job ends with the last failure's code.
out=$("${L[@]}" --nproc-per-node 1 --max-restarts 2 -- bash -c 'exit 3' 2>&1)
rc=$?
[ $rc -eq 3 ] && [ "$(echo "$out" | grep -c 'tandem-launch: attempt')" -eq 3 ] &&
  echo "$out" | grep -q "no restarts left (--max-restarts 2)" && ok "3 attempts, then exit 3" ||
  fail "restarts running out: exit $rc: $out"

# 5. A rank killed by a signal is retryable.
out=$("${L[@]}" --nproc-per-node 2 --max-restarts 1 -- bash -c \
  '[ $RANK = 1 ] && [ $TANDEM_RESTART_COUNT = 0 ] && kill -KILL $$; exit 0' 2>&1)
rc=$?
[ $rc -eq 0 ] && echo "$out" | grep -q "rank 1 on .*: killed by SIGKILL" && ok "a rank killed by SIGKILL is restarted" ||
  fail "a killed rank: exit $rc: $out"

# 6. SIGTERM to the launcher reaches every rank as SIGTERM (tandem-train checkpoints at the next
# step boundary), and nothing is left. Ranks that exit 0 on it: exit 143; ranks that all stop at a
# step boundary (exit 4): exit 4, the documented code, and no restart.
for code in 0 4; do
  MARKER=$marker "${L[@]}" --nproc-per-node 3 --max-restarts 2 -- bash -c \
    "trap 'echo got TERM; exit $code' TERM; echo ready; while :; do sleep 0.1; done" > "$dir/term.out" 2>&1 &
  pid=$!
  wait_for_line "$dir/term.out" "\[rank 2\] ready" && sleep 0.3
  kill -TERM $pid
  wait $pid
  rc=$?
  sleep 0.2
  want=$([ $code = 4 ] && echo 4 || echo 143)
  if [ $rc -ne "$want" ]; then fail "a launcher stopped by SIGTERM, ranks exiting $code, exited $rc (wanted $want)"; cat "$dir/term.out"
  elif [ "$(grep -c 'got TERM' "$dir/term.out")" -ne 3 ]; then fail "not every rank got SIGTERM"; cat "$dir/term.out"
  elif [ "$(grep -c 'tandem-launch: attempt' "$dir/term.out")" -ne 1 ]; then fail "a stopped job was restarted"; cat "$dir/term.out"
  elif [ "$(left_over "$marker")" -ne 0 ]; then fail "processes of the job outlived the launcher"
  else ok "SIGTERM forwarded to every rank; ranks exiting $code: exit $want, nothing left"; fi
done

# 7. When a rank fails, the others get SIGINT — never SIGTERM, which would ask them for a
# checkpoint they cannot finish without it — and SIGKILL after --failure-grace-s when deaf to it.
out=$("${L[@]}" --nproc-per-node 2 -- bash -c \
  '[ $RANK = 0 ] && { sleep 0.5; exit 3; }; trap "echo got TERM; exit 0" TERM; trap "echo got INT; exit 0" INT; while :; do sleep 0.1; done' 2>&1)
rc=$?
[ $rc -eq 3 ] && echo "$out" | grep -q "\[rank 1\] got INT" && ! echo "$out" | grep -q "got TERM" &&
  ok "the survivor of a failure gets SIGINT, not SIGTERM" || fail "survivor's signal: exit $rc: $out"
start=$SECONDS
MARKER=$marker "${L[@]}" --nproc-per-node 2 --failure-grace-s 1 --grace-period-s 30 -- bash -c \
  '[ $RANK = 0 ] && exit 3; trap "" TERM INT; while :; do sleep 0.1; done' > "$dir/grace.out" 2>&1
rc=$?
[ $rc -eq 3 ] && [ $((SECONDS - start)) -lt 6 ] && [ "$(left_over "$marker")" -eq 0 ] &&
  ok "a survivor deaf to SIGINT is killed after --failure-grace-s" || fail "failure grace: exit $rc after $((SECONDS - start)) s"

# 7b. Exit 4 (stopped on request at a step boundary) is no failure: no restart, and when every
# rank has exited 0 or 4 the launcher exits 4.
out=$("${L[@]}" --nproc-per-node 2 --max-restarts 3 -- bash -c '[ $RANK = 1 ] && exit 4; exit 0' 2>&1)
rc=$?
[ $rc -eq 4 ] && [ "$(echo "$out" | grep -c 'tandem-launch: attempt')" -eq 1 ] &&
  echo "$out" | grep -q "every rank stopped on request at a step boundary (exit 4)" &&
  ok "exit 4 and exit 0: no restart, exit 4" || fail "exit 4: exit $rc: $out"
out=$("${L[@]}" --nproc-per-node 2 --max-restarts 3 -- bash -c 'exit 0' 2>&1)
[ $? -eq 0 ] || fail "every rank exiting 0 is not exit 0: $out"

# 8. The launcher killed with SIGKILL takes its ranks with it, and what they started (a wrapper
# script's long-lived child): the guardian ends every rank's process group.
MARKER=$marker "${L[@]}" --nproc-per-node 2 -- bash -c 'sleep 60 & echo ready; wait' > "$dir/kill.out" 2>&1 &
pid=$!
wait_for_line "$dir/kill.out" "\[rank 1\] ready"
kill -KILL $pid
wait $pid 2>/dev/null
for _ in $(seq 50); do [ "$(left_over "$marker")" -eq 0 ] && break; sleep 0.1; done
[ "$(left_over "$marker")" -eq 0 ] && ok "SIGKILL of the launcher ends its ranks" || fail "ranks outlived a killed launcher"

# 9. Bad flags and a program that cannot run are usage errors, before any rank starts.
"${L[@]}" --nproc-per-node=0 -- true > "$dir/usage.out" 2>&1
[ $? -eq 2 ] && grep -q "nproc-per-node = '0': expected an integer from 1" "$dir/usage.out" &&
  ok "a bad flag is refused with exit 2" || fail "bad flag: $(cat "$dir/usage.out")"
"${L[@]}" --max-restarts 3 -- "$dir/no-such-program" > "$dir/usage.out" 2>&1
[ $? -eq 2 ] && grep -q "the program '$dir/no-such-program' is not an executable file" "$dir/usage.out" &&
  ! grep -q "attempt" "$dir/usage.out" && ok "a program that cannot run: exit 2, nothing started" ||
  fail "missing program: $(cat "$dir/usage.out")"

# Heartbeat flags that contradict each other, a port every node cannot know, and a port another
# job's store holds: refused before any rank starts.
"${L[@]}" --heartbeat-timeout-s 2 --heartbeat-interval-s 1 -- true > "$dir/usage.out" 2>&1
[ $? -eq 2 ] && grep -q "heartbeat-timeout-s 2 must be more than 3 x --heartbeat-interval-s 1 = 3 s" "$dir/usage.out" &&
  ok "a heartbeat timeout inside 3 intervals is refused" || fail "heartbeat flags: $(cat "$dir/usage.out")"
"$launch" --nnodes 2 --master-port 0 -- true > "$dir/usage.out" 2>&1
[ $? -eq 2 ] && grep -q "master-port 0 picks a free port on this node; a job of --nnodes 2 needs" "$dir/usage.out" &&
  ok "--master-port 0 on several nodes is refused" || fail "port 0, 2 nodes: $(cat "$dir/usage.out")"
port=$(free_port)
MARKER=$marker "$launch" --master-port "$port" -- bash -c 'echo ready; sleep 60' > "$dir/holder.out" 2>&1 &
holder=$!
wait_for_line "$dir/holder.out" "\[rank 0\] ready"
"$launch" --master-port "$port" -- true > "$dir/usage.out" 2>&1
rc=$?
kill -TERM $holder; wait $holder 2>/dev/null
[ $rc -eq 2 ] && grep -q "cannot listen on 127.0.0.1:$port .*give a free --master-port" "$dir/usage.out" &&
  ! grep -q "attempt" "$dir/usage.out" && ok "a --master-port in use: exit 2, naming the flag" ||
  fail "port in use: exit $rc: $(cat "$dir/usage.out")"

# 10. SIGINT reaches the ranks as SIGINT, and a stop during a failure still names the failure.
MARKER=$marker "${L[@]}" --nproc-per-node 2 --log-dir "$dir/int" -- bash -c \
  'trap "echo got INT; exit 0" INT; echo ready; while :; do sleep 0.1; done' > "$dir/int.out" 2>&1 &
pid=$!
wait_for_line "$dir/int.out" "\[rank 1\] ready" && sleep 0.3
kill -INT $pid
wait $pid
rc=$?
[ $rc -eq 130 ] && [ "$(grep -c 'got INT' "$dir/int.out")" -eq 2 ] && ok "SIGINT forwarded as SIGINT, exit 130" ||
  { fail "SIGINT: exit $rc"; cat "$dir/int.out"; }

# 11. Heartbeats. Each rank has one heartbeat socket of its own (TANDEM_HEARTBEAT_FD) and one
# metrics socket (TANDEM_METRICS_FD), and no other rank's: one inherited by another would keep
# beating for a rank that is gone.
out=$("${L[@]}" --nproc-per-node 3 -- bash -c \
  'n=0; for f in /proc/$$/fd/*; do [[ $(readlink "$f") == socket:* ]] && n=$((n + 1)); done; echo "sockets $n, fd $TANDEM_HEARTBEAT_FD a $(readlink /proc/$$/fd/$TANDEM_HEARTBEAT_FD | cut -d: -f1), metrics fd $TANDEM_METRICS_FD a $(readlink /proc/$$/fd/$TANDEM_METRICS_FD | cut -d: -f1), every $TANDEM_HEARTBEAT_INTERVAL_MS of $TANDEM_HEARTBEAT_TIMEOUT_MS ms"' 2>&1)
[ "$(echo "$out" | grep -cE '^\[rank [0-2]\] sockets 2, fd [0-9]+ a socket, metrics fd [0-9]+ a socket, every 1000 of 360000 ms$')" -eq 3 ] &&
  ok "each rank inherits its own heartbeat and metrics sockets and no other (defaults 1 s / 360 s)" ||
  fail "heartbeat sockets: $out"
# Slow but beating, exiting (end of file), and never beating (a script): none of them is frozen.
hb=(--heartbeat-timeout-s 0.5 --heartbeat-interval-s 0.1)
for mode in slow exiting; do
  out=$("${L[@]}" "${hb[@]}" --nproc-per-node 2 -- /usr/bin/python3 "$beater" $mode 2>&1)
  rc=$?
  [ $rc -eq 0 ] && ! echo "$out" | grep -q froze && ok "a rank that is $mode is not frozen" ||
    fail "a $mode rank: exit $rc: $out"
done
out=$("${L[@]}" "${hb[@]}" -- bash -c 'sleep 1.5; echo slept' 2>&1)
[ $? -eq 0 ] && echo "$out" | grep -q "\[rank 0\] slept" && ok "a program that never beats is never judged" ||
  fail "a program without heartbeats: $out"
# Beating once and then silent past the timeout: frozen. Its stack is recorded (gdb, after what
# /proc says), the failure record names it, its host and the stack file, and the attempt is
# restarted (a frozen rank is a fault).
out=$(MARKER=$marker "${L[@]}" "${hb[@]}" --nproc-per-node 2 --max-restarts 1 --log-dir "$dir/frozen" -- \
  bash -c '[ $TANDEM_RESTART_COUNT = 1 ] && exit 0; [ $RANK = 1 ] && exec /usr/bin/python3 "$0" freeze; exec /usr/bin/python3 "$0" slow' "$beater" 2>&1)
rc=$?
record=$dir/frozen/attempt-0.json stack=$dir/frozen/stack-attempt0-rank1.txt
if [ $rc -ne 0 ]; then fail "a frozen rank, then a good restart: exit $rc: $out"
elif ! echo "$out" | grep -q "tandem-launch: rank 1 on .* froze (.* s since its heartbeat): stack recorded in $stack"; then fail "no word of the frozen rank's stack: $out"
elif ! python3 -c 'import json,sys,socket; r=json.load(open(sys.argv[1])); h=r["frozen_ranks"][0]; assert r["failed_rank"]==1 and r["frozen"] and r["restarting"] and r["cause"].startswith("frozen: no heartbeat for"), r; assert h["rank"]==1 and h["frozen"] and h["host"]==socket.gethostname() and h["stack_file"]==sys.argv[2] and h["recorded_by"]=="gdb", h' "$record" "$stack"; then fail "the record does not name the frozen rank, its host and stack: $(cat "$record")"
elif ! grep -q "^thread [0-9]* (python3) state S | syscall: .* | wchan: " "$stack"; then fail "the stack lacks /proc's view: $(cat "$stack")"
elif ! grep -q "^#0 " "$stack"; then fail "the stack lacks gdb's backtrace: $(cat "$stack")"
elif [ "$(left_over "$marker")" -ne 0 ]; then fail "processes of the frozen job were left"
else ok "a rank silent past the heartbeat timeout: stack recorded, named in the record, restarted"; fi
# Without gdb, /proc alone, and the record says so.
out=$(PATH=/nonexistent "${L[@]}" "${hb[@]}" --log-dir "$dir/nogdb" -- /usr/bin/python3 "$beater" freeze 2>&1)
rc=$?
[ $rc -eq 3 ] && grep -q "gdb is not on PATH" "$dir/nogdb/stack-attempt0-rank0.txt" &&
  grep -q "^thread [0-9]* (python3) state S" "$dir/nogdb/stack-attempt0-rank0.txt" &&
  grep -q '"recorded_by": "/proc only: gdb is not on PATH"' "$dir/nogdb/attempt-0.json" &&
  ok "without gdb the stack comes from /proc, and the record says so" || fail "no gdb: exit $rc: $out"

# 12. The order of timeouts: tandem-train under the launcher refuses comm.timeout_s at or above
# the heartbeat timeout, and a heartbeat timeout at or above comm.rendezvous_timeout_s (exit 2,
# the numbers, the key or flag to change; no restart).
for case in "--heartbeat-timeout-s 5|--set comm.timeout_s=10|comm.timeout_s = 10 s is not below tandem-launch's heartbeat timeout of 5 s (TANDEM_HEARTBEAT_TIMEOUT_MS=5000): the launcher would end a rank stuck in a collective before the watchdog could name the operation. Set comm.timeout_s below 5, or raise tandem-launch's --heartbeat-timeout-s" \
  "--heartbeat-timeout-s 700|--set comm.timeout_s=300|tandem-launch's heartbeat timeout of 700 s (TANDEM_HEARTBEAT_TIMEOUT_MS=700000) is not below comm.rendezvous_timeout_s = 600 s"; do
  IFS='|' read -r flag setting want <<<"$case"
  out=$("${L[@]}" $flag --max-restarts 3 -- "$train" examples/configs/tiny.toml $setting 2>&1)
  rc=$?
  [ $rc -eq 2 ] && echo "$out" | grep -qF "$want" && [ "$(echo "$out" | grep -c 'tandem-launch: attempt')" -eq 1 ] &&
    ok "timeouts out of order refused: $flag $setting" || fail "timeout order ($flag $setting): exit $rc: $out"
done

# 13. tandem-train on 2 ranks under the launcher (UCX, the store the launcher serves).
port=$(free_port)
out=$(OMP_NUM_THREADS=1 "$launch" --nproc-per-node 2 --master-port "$port" -- "$train" \
  examples/configs/tiny.toml --set train.steps=3 --set train.eval_batches=1 2>&1)
rc=$?
[ $rc -eq 0 ] && echo "$out" | grep -q "^\[rank 0\] .*summary: 3 steps" && ok "tandem-train, 2 ranks" ||
  { fail "tandem-train under the launcher: exit $rc"; echo "$out" | tail -20; }

# 14. Killing rank 0 does not take the store with it: the launcher, not rank 0, listens on
# MASTER_PORT, and the restarted attempt trains on the same store.
train_path=$(realpath "$train")
printf '%s\n' '#!/usr/bin/env bash' \
  '# Attempt 0 trains for ever (the test kills a rank in it); the restart trains 3 steps.' \
  'steps=3; [ "$TANDEM_RESTART_COUNT" = 0 ] && steps=100000' \
  "exec $train_path examples/configs/tiny.toml --set train.log_interval=1 --set train.steps=\$steps --set train.eval_batches=1" \
  > "$dir/train_once.sh"
chmod +x "$dir/train_once.sh"
port=$(free_port)
OMP_NUM_THREADS=1 MARKER=$marker "$launch" --nproc-per-node 2 --master-port "$port" --max-restarts 1 \
  --log-dir "$dir/store" -- "$dir/train_once.sh" > "$dir/store.out" 2>&1 &
pid=$!
wait_for_line "$dir/store.out" "step 2/100000"
holders=$(listener_pids "$port" | tr '\n' ' ')
rank0=$(rank_pid "$marker" 0)
kill -KILL "$rank0"
wait $pid
rc=$?
if [ "$holders" != "$pid " ]; then fail "MASTER_PORT $port is held by '$holders', not the launcher ($pid; rank 0 is $rank0)"
elif [ $rc -ne 0 ]; then fail "after rank 0 was killed the job ended with $rc"; tail -20 "$dir/store.out"
elif ! grep -q "^\[rank 0\] .*summary: 3 steps" "$dir/store.out"; then fail "the restarted attempt did not train"; tail -20 "$dir/store.out"
elif ! python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["failed_rank"]==0 and r["signal"]=="SIGKILL"' "$dir/store/attempt-0.json"; then fail "attempt-0.json does not name rank 0's SIGKILL"
else ok "rank 0 killed: the launcher's store lives on, the restart trains"; fi

[ $failures -eq 0 ] && echo "launch_test: PASS" || echo "launch_test: $failures failures"
exit $((failures > 0))
