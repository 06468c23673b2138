#!/usr/bin/env bash
# End to end: tandem-train trains tiny.toml for 40 steps on the KJV corpus, the held-out loss falls
# well below ln(256) = 5.55, and the summary JSON has every field tools rely on.
# Usage: train_learns.sh PATH/TO/tandem-train   (run from the repository root)
set -euo pipefail
train=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
scripts/prepare-data
"$train" examples/configs/tiny.toml --set train.steps=40 --set train.eval_interval=20 \
  --summary-json "$tmp/summary.json" > "$tmp/log" 2>&1 || { cat "$tmp/log"; exit 1; }
grep -E "^step (1|40)/40|^eval|^summary" "$tmp/log"
grep -qE "^summary: 40 steps \| final loss [0-9.]+ \| final held-out loss [0-9.]+ \|" "$tmp/log"
grep -qE "^step 40/40 \| loss [0-9.]+ \| lr [0-9.e+-]+ \| grad norm [0-9.]+ \| [0-9]+ tok/s \| [0-9.]+ ms/step \| ETA" "$tmp/log"
/usr/bin/python3 - "$tmp/summary.json" <<'PY'
import json, math, sys
s = json.load(open(sys.argv[1]))
for key in ["steps", "losses", "eval_losses", "final_loss", "final_eval_loss", "tokens_per_second",
            "params", "flops_per_token", "config"]:
    assert key in s, f"summary lacks {key}"
assert s["steps"] == 40 and len(s["losses"]) == 40
assert [e[0] for e in s["eval_losses"]] == [20, 40], s["eval_losses"]
assert abs(s["losses"][0] - math.log(256)) < 0.3, f"first loss {s['losses'][0]} is not near ln(256)"
assert s["final_eval_loss"] < 3.0, f"held-out loss {s['final_eval_loss']} did not fall below 3.0"
assert s["config"]["train"]["steps"] == 40 and s["config"]["model"]["n_routed_experts"] == 8
print(f"train_learns: loss {s['losses'][0]:.3f} -> held-out {s['final_eval_loss']:.3f}")
PY
