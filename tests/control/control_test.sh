#!/usr/bin/env bash
# The control service end to end, through tandemctl and through an independent client generated
# from monitoring/proto/control.proto with Python's grpcio (control_client.py), on 127.0.0.1:
# status while running; calls without a token or with a wrong one refused, and nothing changed;
# malformed learning rates refused; pause holds the step count and resume lets it go on; watch
# streams one message per step; checkpoint writes one that tandem-checkpoint verifies; set-lr
# changes the logged learning rate from the step it names, exactly, and a run resumed from a
# later checkpoint trains at the same rates bit for bit; stop exits 0 after a final checkpoint;
# a generated token is written 0600 where tandemctl finds it; a port in use is refused (exit 2);
# on a 2-rank job (mpirun) every rank's own log shows the new rate from the same step, and pause
# holds both ranks; and 2 ranks started the torchrun way (UCX, no MPI) do the same.
# Usage: control_test.sh BUILD/bin MPIRUN [MPIRUN ARGS...]   (run from the repository root)
set -euo pipefail
bin=$1
shift
mpirun=("$@")
train=$bin/tandem-train
ctl=$bin/tandemctl
tool=$bin/tandem-checkpoint
py=/usr/bin/python3
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
groups=()  # every job runs in a process group of its own (setsid), killed whole at exit
cleanup() {
  for g in "${groups[@]}"; do kill -9 -- "-$g" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
scripts/prepare-data >/dev/null

$py -c "import grpc, grpc_tools" 2>/dev/null ||
  fail "$py cannot import grpc and grpc_tools: install python3-grpcio and python3-grpc-tools (scripts/install-deps)"
mkdir "$tmp/gen"
$py -m grpc_tools.protoc -Imonitoring/proto --python_out="$tmp/gen" --grpc_python_out="$tmp/gen" \
  monitoring/proto/control.proto
client() { $py "$here/control_client.py" "$tmp/gen" "$@"; }
# A field of the JSON object on stdin ("a.b" for nested ones).
field() { $py -c 'import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."): v = v[k]
print(json.dumps(v) if isinstance(v, (dict, list)) else v)' "$1"; }
free_port() { $py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() {  # wait_for SECONDS CONDITION...: polls every 50 ms
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ $SECONDS -lt $deadline ] || fail "timed out waiting for: $*"
    sleep 0.05
  done
}
reached() {  # reached ADDR N: the job at ADDR has trained N steps or more
  local s
  s=$(client "$1" status 2>/dev/null) && [ "$(echo "$s" | field step)" -ge "$2" ]
}
last_step() { tail -n 1 "$1" | field step; }  # of a --log-jsonl file
ok() {  # ok COMMAND...: its output; a failure stops the test naming the command and its words
  local out
  out=$("$@" 2>&1) || fail "$(basename "$1") ${*:2} failed: $out"
  echo "$out"
}
expect_refused() {  # expect_refused CODE WHAT COMMAND...: the command fails, printing CODE
  local out
  if out=$("${@:3}" 2>&1); then fail "$2 was accepted: $out"; fi
  echo "$out" | grep -q "$1" || fail "$2: expected $1, got: $out"
  echo "refused as expected ($2): $out"
}

# Tens of ms a step, so the test acts between steps; one thread: bitwise repeatable. train.steps
# is far away: every run here ends by the control service's Stop.
small=(examples/configs/tiny.toml --set train.log_interval=1 --set train.steps=100000 --set model.d_model=64
  --set model.seq_len=64 --set train.batch_size=8 --set train.eval_interval=0
  --set train.eval_batches=1 --set train.threads=1)
token="$tmp/token"
printf '  s3cret-token-%s \n' "$RANDOM" > "$token"  # the whitespace is stripped
chmod 600 "$token"
printf 'not-the-token\n' > "$tmp/wrong"
secret=$(tr -d ' \n' < "$token")

# The learning rates of a --log-jsonl file against the schedule (tiny.toml's: lr 3e-3, min_lr
# 3e-4, warmup 30, over train.steps 100000): before step K the schedule's, at K exactly RATE,
# after it RATE times the schedule's ratio to its value at K.
check_lr() {  # check_lr LOG K RATE
  $py - "$@" <<'EOF'
import json, math, sys
log, k, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
lr, min_lr, warmup, total = 3e-3, 3e-4, 30, 100000
def schedule(i):  # 0-based step index
    if i < warmup:
        return lr * (i + 1) / warmup
    p = min(1.0, (i - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * p))
records = [json.loads(l) for l in open(log) if '"lr"' in l]
assert any(r["step"] > k for r in records), f"{log}: no record after step {k}"
for r in records:
    n, got = r["step"], r["lr"]
    want = schedule(n - 1) if n < k else rate if n == k else rate * schedule(n - 1) / schedule(k - 1)
    assert (got == want) if n == k else math.isclose(got, want, rel_tol=1e-12), \
        f"{log}: step {n} trained at lr {got!r}, expected {want!r} (change at step {k})"
print(f"{log}: schedule before step {k}, exactly {rate} at {k}, scaled after "
      f"({len(records)} records)")
EOF
}

echo "== one process: status, refusals, pause/resume, watch, checkpoint, set-lr, stop"
port=$(free_port)
addr=127.0.0.1:$port
setsid "$train" "${small[@]}" --set checkpoint.dir="$tmp/ck" --set control.port="$port" \
  --set control.token_file="$token" --log-jsonl "$tmp/a.jsonl" > "$tmp/a.log" 2>&1 &
pid=$!
groups+=($pid)
wait_for 120 reached "$addr" 3
grep -q "control: serving tandem.control.v1.Control on $addr; token from control.token_file" \
  "$tmp/a.log" || fail "the log does not say where the control service is"
grep -q "$secret" "$tmp/a.log" && fail "the token itself is in the log"

"$ctl" --addr "$addr" status | tee "$tmp/status.txt"
grep -Eq '^step [0-9]+/100000 \| loss .* \| running$' "$tmp/status.txt" || fail "tandemctl status"
grep -q '^grid: 1 rank = pp 1 x dp 1 (ep 1)$' "$tmp/status.txt" || fail "tandemctl status grid"
grep -Eq '^rank 0 +[0-9.]+ ms ' "$tmp/status.txt" || fail "tandemctl status: no rank bar"
s=$(client "$addr" status)
echo "python GetStatus: $s"
[ "$(echo "$s" | field state)" = STATE_RUNNING ] || fail "GetStatus state"
[ "$(echo "$s" | field paused)" = False ] || fail "GetStatus paused"
[ "$(echo "$s" | field grid.world_size)" = 1 ] || fail "GetStatus grid"
$py -c 'import json, sys; s = json.loads(sys.argv[1])
assert len(s["ranks"]) == 1 and s["ranks"][0]["step_seconds"] > 0, s["ranks"]
assert s["loss"] > 0 and s["learning_rate"] > 0 and s["tokens_per_second"] > 0, s' "$s"
"$ctl" --addr "$addr" status --json | field state | grep -qx running || fail "status --json"

# Without the token, or with a wrong one, nothing changes: the job runs on at its schedule.
before=$(client "$addr" status | field step)
expect_refused UNAUTHENTICATED "pause without a token" client "$addr" pause
expect_refused UNAUTHENTICATED "stop with a wrong token" client "$addr" stop --token not-it
expect_refused UNAUTHENTICATED "set-lr with a wrong token" client "$addr" set-lr 1e-4 --token x
expect_refused UNAUTHENTICATED "checkpoint without a token" client "$addr" checkpoint
expect_refused UNAUTHENTICATED "an empty token" client "$addr" pause --token ""
expect_refused "wrong token" "tandemctl pause with a wrong token" \
  "$ctl" --addr "$addr" --token-file "$tmp/wrong" pause
expect_refused "wrong token" "tandemctl stop with a wrong token" \
  env TANDEM_CONTROL_TOKEN=nope "$ctl" --addr "$addr" stop
expect_refused "no token" "tandemctl checkpoint without a token" \
  env HOME="$tmp/nohome" "$ctl" --addr "$addr" checkpoint
# Malformed learning rates, with the right token.
for bad in -1 0 nan inf -inf 1.5; do
  expect_refused INVALID_ARGUMENT "set-lr $bad" client "$addr" set-lr "$bad" --token "$secret"
done
expect_refused "must be a number in (0, 1]" "tandemctl set-lr -1e-4" \
  "$ctl" --addr "$addr" --token-file "$token" set-lr -1e-4
expect_refused "must be a number in (0, 1]" "tandemctl set-lr nan" \
  "$ctl" --addr "$addr" --token-file "$token" set-lr nan
set +e
"$ctl" --addr "$addr" --token-file "$token" set-lr fast 2> "$tmp/err"
code=$?
set -e
[ $code = 2 ] && grep -q "'fast' is not a number" "$tmp/err" || fail "set-lr fast: exit $code"
wait_for 60 reached "$addr" $((before + 3))
s=$(client "$addr" status)
[ "$(echo "$s" | field state)" = STATE_RUNNING ] || fail "a refused call changed the state"
[ "$(echo "$s" | field learning_rate_changed_at_step)" = 0 ] || fail "a refused set-lr applied"
[ -z "$(ls "$tmp/ck")" ] || fail "a refused checkpoint was written: $(ls "$tmp/ck")"
kill -0 $pid || fail "the job died"

# Pause (tandemctl), resume (Python); then pause (Python), resume (tandemctl).
out=$(ok "$ctl" --addr "$addr" --token-file "$token" pause)
echo "$out"
paused=$(echo "$out" | sed -nE 's/^paused after step ([0-9]+)$/\1/p')
[ -n "$paused" ] || fail "tandemctl pause said: $out"
sleep 1.5
s=$(client "$addr" status)
[ "$(echo "$s" | field step)" = "$paused" ] || fail "the step moved while paused: $s"
[ "$(echo "$s" | field state)" = STATE_PAUSED ] || fail "status while paused: $s"
[ "$(last_step "$tmp/a.jsonl")" = "$paused" ] || fail "the log moved past step $paused while paused"
"$ctl" --addr "$addr" status | grep -q '| paused$' || fail "tandemctl status while paused"
again=$(ok "$ctl" --addr "$addr" --token-file "$token" pause)
[ "$again" = "already paused after step $paused" ] || fail "a second pause said: $again"
r=$(ok client "$addr" resume --token "$secret")
[ "$(echo "$r" | field step)" = "$paused" ] && [ "$(echo "$r" | field changed)" = True ] ||
  fail "Resume replied $r"
wait_for 60 reached "$addr" $((paused + 3))
echo "resumed: past step $((paused + 3))"
r=$(ok client "$addr" pause --token "$secret")
paused=$(echo "$r" | field step)
sleep 1
[ "$(client "$addr" status | field step)" = "$paused" ] || fail "Python's Pause did not hold"
out=$(ok "$ctl" --addr "$addr" --token-file "$token" resume)
[ "$out" = "resumed after step $paused" ] || fail "tandemctl resume said: $out"
out=$(ok "$ctl" --addr "$addr" --token-file "$token" resume)
echo "$out" | grep -q '^not paused' || fail "resume of a running job said: $out"

# WatchStatus: one message per step (the first one is the current status).
w=$(client "$addr" watch 6)
$py -c 'import json, sys; m = json.loads(sys.argv[1]); steps = [int(x["step"]) for x in m]
assert steps[1:] == list(range(steps[1], steps[1] + 5)), f"not one message per step: {steps}"
print("WatchStatus steps", steps)' "$w"
"$ctl" --addr "$addr" watch --count 4 > "$tmp/watch.txt"
cat "$tmp/watch.txt"
[ "$(grep -cE '^step [0-9]+/100000 .* \| running$' "$tmp/watch.txt")" = 4 ] || fail "tandemctl watch"
# A flood of watchers (which need no token) cannot lock the operator out: the 9th stream is
# refused, and status, pause and resume still answer while 8 are held.
f=$(client "$addr" flood 8 --token "$secret")
echo "8 watchers held: $f"
$py -c 'import json, sys; r = json.loads(sys.argv[1])
assert r["one_more"].startswith("RESOURCE_EXHAUSTED: 8 status streams are open already"), r
assert r["status"] == r["pause"] == r["resume"] == "OK", r' "$f" || fail "a flood of watchers"

# set-lr: exactly that rate from the step it names, the schedule's shape after it.
out=$(ok "$ctl" --addr "$addr" --token-file "$token" set-lr 1e-4)
echo "$out"
k=$(echo "$out" | sed -nE 's/^learning rate 0.0001 from step ([0-9]+) on .*/\1/p')
[ -n "$k" ] || fail "tandemctl set-lr said: $out"
[ "$(client "$addr" status | field learning_rate_changed_at_step)" = "$k" ] || fail "status: change"

# Checkpoints on request, after the change: both verify, and the manifest records the change.
out=$(ok "$ctl" --addr "$addr" --token-file "$token" checkpoint)
echo "$out"
ck1=$(echo "$out" | sed -nE 's/^checkpoint (.*) complete \(step [0-9]+\)$/\1/p')
[ -n "$ck1" ] && [ -d "$ck1" ] || fail "tandemctl checkpoint said: $out"
"$tool" verify "$ck1" || fail "tandem-checkpoint verify refused $ck1"
r=$(ok client "$addr" checkpoint --token "$secret")
ck2=$(echo "$r" | field path)
[ "$(basename "$ck2")" = "$(printf 'step-%08d' "$(echo "$r" | field step)")" ] || fail "Checkpoint: $r"
"$tool" verify "$ck2" || fail "tandem-checkpoint verify refused $ck2"
$py -c 'import json, sys; c = json.load(open(sys.argv[1] + "/manifest.json"))["lr_schedule"]["change"]
assert c == {"from_step": int(sys.argv[2]) - 1, "learning_rate": 1e-4}, c' "$ck1" "$k" ||
  fail "the manifest does not record the learning-rate change"

# Stop: a final checkpoint, exit 0, and the reply names it.
wait_for 60 reached "$addr" $(($(basename "$ck2" | sed 's/step-0*//') + 6))
out=$(ok "$ctl" --addr "$addr" --token-file "$token" stop)
echo "$out"
set +e
wait $pid
code=$?
set -e
[ $code = 0 ] || { tail -5 "$tmp/a.log"; fail "tandem-train exited $code after Stop, expected 0"; }
stopped=$(echo "$out" | sed -nE 's/^stopped after step ([0-9]+); final checkpoint (.*)$/\1/p')
[ -n "$stopped" ] || fail "tandemctl stop said: $out"
[ "$(last_step "$tmp/a.jsonl")" = "$stopped" ] || fail "the log goes past the stop"
"$tool" verify "$tmp/ck/$(printf 'step-%08d' "$stopped")" || fail "the final checkpoint"
grep -q "stopped on request (the control service's Stop) after step $stopped" "$tmp/a.log" ||
  fail "the log does not say why it stopped"
check_lr "$tmp/a.jsonl" "$k" 1e-4
expect_refused "cannot reach the control service at $addr" "tandemctl once the job is gone" \
  "$ctl" --addr "$addr" --timeout-s 1 status

echo "== resumed from a checkpoint after set-lr: the same rates and losses, bit for bit"
port=$(free_port)
setsid "$train" "${small[@]}" --resume "$ck1" --set checkpoint.dir="$tmp/ck-resumed" \
  --set control.port="$port" --set control.token_file="$token" --log-jsonl "$tmp/b.jsonl" \
  > "$tmp/b.log" 2>&1 &
pid=$!
groups+=($pid)
from=$(basename "$ck1" | sed 's/step-0*//')
wait_for 120 reached "127.0.0.1:$port" $((from + 5))
client "127.0.0.1:$port" stop --token "$secret" > /dev/null
wait $pid || fail "the resumed run exited $?"
grep -q "learning rate was changed to 0.0001 from step $k on" "$tmp/b.log" ||
  fail "the resumed run does not say it keeps the change"
$py - "$tmp/a.jsonl" "$tmp/b.jsonl" <<'EOF' || fail "the resumed run trained otherwise"
import json, sys
a = {r["step"]: (r["lr"], r["loss"]) for r in map(json.loads, open(sys.argv[1])) if "lr" in r}
b = [json.loads(l) for l in open(sys.argv[2])]
b = [(r["step"], (r["lr"], r["loss"])) for r in b if "lr" in r]
assert len(b) >= 5, b
bad = [(s, got, a[s]) for s, got in b if s in a and got != a[s]]
assert not bad, f"(step, resumed, original) differ: {bad[:3]}"
print(f"resumed steps {b[0][0]}..{b[-1][0]}: lr and loss equal the original run's bit for bit")
EOF

echo "== no token configured: one is generated, 0600, where tandemctl finds it"
port=$(free_port)
mkdir "$tmp/home"
HOME="$tmp/home" setsid "$train" "${small[@]}" --set control.port="$port" \
  > "$tmp/c.log" 2>&1 &
pid=$!
groups+=($pid)
wait_for 120 reached "127.0.0.1:$port" 1
generated="$tmp/home/.tandem/control-token-$port"
grep -q "token generated, in $generated (mode 0600)" "$tmp/c.log" || fail "the log does not name $generated"
[ "$(stat -c %a "$generated")" = 600 ] || fail "$generated has mode $(stat -c %a "$generated")"
[ "$(stat -c %a "$tmp/home/.tandem")" = 700 ] || fail "~/.tandem is not 0700"
HOME="$tmp/home" "$ctl" --addr "127.0.0.1:$port" --token-file "$generated" pause
HOME="$tmp/home" "$ctl" --addr "127.0.0.1:$port" resume  # found by itself
expect_refused UNAUTHENTICATED "the configured token on another job" \
  client "127.0.0.1:$port" pause --token "$secret"
echo "== a port in use is refused before training (exit 2)"
set +e
"$train" "${small[@]}" --set control.port="$port" --set control.token_file="$token" \
  > "$tmp/d.log" 2>&1
code=$?
set -e
[ $code = 2 ] && grep -q "control: cannot listen on 127.0.0.1:$port" "$tmp/d.log" ||
  { cat "$tmp/d.log"; fail "a second job on port $port exited $code"; }
echo "refused: $(grep 'cannot listen' "$tmp/d.log")"
out=$(HOME="$tmp/home" ok "$ctl" --addr "127.0.0.1:$port" stop)
echo "$out"
echo "$out" | grep -Eq '^stopped after step [0-9]+ \(no checkpoint: checkpoint.dir is not set\)$' ||
  fail "stop without checkpoints said: $out"
wait $pid || fail "the job exited $? after Stop"

echo "== 2 ranks (mpirun): every rank's log shows the new rate from the same step"
port=$(free_port)
addr=127.0.0.1:$port
setsid "${mpirun[@]}" -np 2 -x OMP_NUM_THREADS=1 "$train" "${small[@]}" \
  --set checkpoint.dir="$tmp/ck2" --set control.port="$port" --set control.token_file="$token" \
  --log-jsonl "$tmp/rank{rank}.jsonl" > "$tmp/e.log" 2>&1 &
pid=$!
groups+=($pid)
wait_for 120 reached "$addr" 3
s=$(client "$addr" status)
$py -c 'import json, sys; s = json.loads(sys.argv[1])
assert s["grid"]["world_size"] == 2 and s["grid"]["dp"] == 2, s["grid"]
assert [r["rank"] for r in s["ranks"]] == [0, 1] and all(r["step_seconds"] > 0 for r in s["ranks"]), s
print("2 ranks:", s["ranks"])' "$s"
r=$(ok client "$addr" set-lr 2e-4 --token "$secret")
k=$(echo "$r" | field applied_at_step)
echo "SetLearningRate 2e-4: applied at step $k"
r=$(ok client "$addr" pause --token "$secret")
paused=$(echo "$r" | field step)
sleep 1.5
for rank in 0 1; do
  [ "$(last_step "$tmp/rank$rank.jsonl")" = "$paused" ] || fail "rank $rank moved past step $paused while paused"
done
"$ctl" --addr "$addr" --token-file "$token" resume
wait_for 60 reached "$addr" $((paused > k ? paused + 3 : k + 3))
out=$(ok "$ctl" --addr "$addr" --token-file "$token" stop)
echo "$out"
wait $pid || { tail -5 "$tmp/e.log"; fail "the 2-rank job exited $? after Stop"; }
stopped=$(echo "$out" | sed -nE 's/^stopped after step ([0-9]+); final checkpoint .*/\1/p')
"$tool" verify "$tmp/ck2/$(printf 'step-%08d' "$stopped")"
for rank in 0 1; do check_lr "$tmp/rank$rank.jsonl" "$k" 2e-4; done
cmp <($py -c 'import json, sys; [print(r["step"], repr(r["lr"])) for r in map(json.loads, open(sys.argv[1]))]' "$tmp/rank0.jsonl") \
  <($py -c 'import json, sys; [print(r["step"], repr(r["lr"])) for r in map(json.loads, open(sys.argv[1]))]' "$tmp/rank1.jsonl") ||
  fail "the ranks logged different learning rates"
echo "== 2 ranks started the torchrun way (no MPI, UCX): rank 0 serves, Stop ends both with 0"
port=$(free_port)
store=$(free_port)
addr=127.0.0.1:$port
pids=()
for r in 0 1; do
  RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$store \
    setsid "$train" "${small[@]}" --set control.port="$port" --set control.token_file="$token" \
    --log-jsonl "$tmp/t{rank}.jsonl" > "$tmp/t$r.log" 2>&1 &
  pids+=($!)
  groups+=($!)
done
wait_for 120 reached "$addr" 3
[ "$(client "$addr" status | field grid.world_size)" = 2 ] || fail "torchrun-style status grid"
out=$(ok "$ctl" --addr "$addr" --token-file "$token" set-lr 5e-4)
k=$(echo "$out" | sed -nE 's/^learning rate 0.0005 from step ([0-9]+) on .*/\1/p')
wait_for 60 reached "$addr" $((k + 2))
out=$(ok "$ctl" --addr "$addr" --token-file "$token" stop)
echo "$out"
for p in "${pids[@]}"; do
  wait "$p" || { tail -3 "$tmp"/t[01].log; fail "a torchrun-style rank exited $? after Stop"; }
done
for rank in 0 1; do check_lr "$tmp/t$rank.jsonl" "$k" 5e-4; done
echo "PASS"
