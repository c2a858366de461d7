#!/usr/bin/env bash
# The Fashion-MNIST experiments of docs/results.md: LeNet (re-parameterized GroupNorm), 3 epochs,
# seed 1, float / quantization-aware 8- and 4-bit `normal` and `rquant`, weight clipping and RandBET;
# each quantized model evaluated at bit error rates 0.1% and 1% over 50 patterns (seeds 100-149) on
# the first LIMIT (default 5000) test images. Prints markdown tables. About 35 minutes on 2 cores (2026-12-04).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BITROBUST_BIN:-$ROOT/build/bitrobust}
OUT=${OUT:-$ROOT/runs/fmnist}
EPOCHS=${EPOCHS:-3}
LIMIT=${LIMIT:-5000}
BITS=${BITS:-8 4}
mkdir -p "$OUT"
train() {  # name, options...
  local name=$1; shift
  [[ -f $OUT/$name.pt ]] || "$BIN" train --dataset fashion-mnist --model lenet --norm regn --epochs "$EPOCHS" --seed 1 \
    --quiet --out "$OUT/$name.pt" --json "$OUT/$name.train.json" "$@"
}
evaluate() {
  local name=$1
  [[ -f $OUT/$name.eval.json ]] || "$BIN" eval --model "$OUT/$name.pt" --rates 0.1%,1% --patterns 50 --seed 100 \
    --limit "$LIMIT" --quiet --json "$OUT/$name.eval.json" >/dev/null
}
train float
for m in $BITS; do
  train normal$m --scheme normal --bits $m
  train rquant$m --scheme rquant --bits $m
  train rquant${m}_clip0.1 --scheme rquant --bits $m --clip 0.1
  train rquant${m}_clip0.1_randbet0.1 --scheme rquant --bits $m --clip 0.1 --randbet 0.1%
  train rquant${m}_clip0.1_randbet1 --scheme rquant --bits $m --clip 0.1 --randbet 1%
  for n in normal$m rquant$m rquant${m}_clip0.1 rquant${m}_clip0.1_randbet0.1 rquant${m}_clip0.1_randbet1; do
    evaluate $n
  done
done
"$BIN" quantize --model "$OUT/float.pt" --scheme rquant --bits 8 --out "$OUT/float_ptq_rquant8.pt" \
  --json "$OUT/float_ptq_rquant8.json"
python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
def load(n, suffix):
    p = os.path.join(out, n + suffix)
    return json.load(open(p)) if os.path.exists(p) else None
f = load("float", ".train.json")
# (train_seconds is null when a resumed run found nothing left to train)
secs = lambda t: "–" if t.get("train_seconds") is None else f"{t['train_seconds']:.0f}"
print("| model | test error % (10000) | clean error % (eval subset) | RErr 0.1% (mean ± std) | RErr 1% (mean ± std) | train time s |")
print("|---|---|---|---|---|---|")
print(f"| float | {100*f['test_error']:.2f} | – | – | – | {secs(f)} |")
for m in (8, 4):
    for n in (f"normal{m}", f"rquant{m}", f"rquant{m}_clip0.1", f"rquant{m}_clip0.1_randbet0.1", f"rquant{m}_clip0.1_randbet1"):
        t, e = load(n, ".train.json"), load(n, ".eval.json")
        if not t or not e: continue
        r = {round(x["rate"], 6): x for x in e["results"]}
        cell = lambda p: f"{100*r[p]['rerr_mean']:.2f} ± {100*r[p]['rerr_std']:.2f}"
        print(f"| {n} ({e['scheme']}) | {100*t['test_error']:.2f} | {100*e['clean_error']:.2f} | {cell(0.001)} | {cell(0.01)} | {secs(t)} |")
p = load("float_ptq_rquant8", ".json")
if p: print(f"\nPost-training 8-bit rquant of the float model: {100*p['float_test_error']:.2f}% -> {100*p['test_error']:.2f}%")
PY
