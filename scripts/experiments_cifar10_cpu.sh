#!/usr/bin/env bash
# CIFAR-10 on the CPU, a short stand-in for the reference's GPU runs (docs/results.md): a narrow
# SimpleNet (default width 16, re-parameterized BatchNorm: at width 16 the GroupNorm SimpleNet
# stays at chance level for epochs, in PyTorch as here, see docs/results.md) for a few epochs, 8-bit `normal`,
# `rquant` + clipping 0.1, and + RandBET 1%; hold-out protocol (train batches 1-4, test batch 5);
# RErr over PATTERNS patterns (seeds 100...) on the first LIMIT test images. Prints a markdown table.
# The reference's numbers need SimpleNet at width 64 for 250 epochs on a GPU.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BITROBUST_BIN:-$ROOT/build/bitrobust}
OUT=${OUT:-$ROOT/runs/cifar10_cpu}
WIDTH=${WIDTH:-16}
NORM=${NORM:-rebn}
EPOCHS=${EPOCHS:-5}
PATTERNS=${PATTERNS:-20}
LIMIT=${LIMIT:-5000}
RATES=${RATES:-0.1%,1%,2.5%}
MODELS="normal8 rquant8_clip0.1 rquant8_clip0.1_randbet1"
mkdir -p "$OUT"
train() {  # name, options...
  local name=$1; shift
  [[ -f $OUT/$name.pt ]] || "$BIN" train --dataset cifar10 --cifar-protocol holdout --model simplenet --width "$WIDTH" \
    --norm "$NORM" --epochs "$EPOCHS" --seed 1 --quiet --out "$OUT/$name.pt" --json "$OUT/$name.train.json" "$@"
}
train normal8 --scheme normal --bits 8
train rquant8_clip0.1 --scheme rquant --bits 8 --clip 0.1
train rquant8_clip0.1_randbet1 --scheme rquant --bits 8 --clip 0.1 --randbet 1%
for n in $MODELS; do
  [[ -f $OUT/$n.eval.json ]] || "$BIN" eval --model "$OUT/$n.pt" --rates "$RATES" --patterns "$PATTERNS" --seed 100 \
    --limit "$LIMIT" --quiet --json "$OUT/$n.eval.json" >/dev/null
done
python3 - "$OUT" $MODELS <<'PY'
import json, os, sys
out, models = sys.argv[1], sys.argv[2:]
rows = [(n, json.load(open(os.path.join(out, n + ".train.json"))), json.load(open(os.path.join(out, n + ".eval.json"))))
        for n in models]
rates = [r["rate"] for r in rows[0][2]["results"]]
print("| model | test error % (10000) | clean % (eval subset) | " +
      " | ".join(f"RErr {100*p:g}% (mean ± std)" for p in rates) + " | train time s |")
print("|---|---|---|" + "---|" * len(rates) + "---|")
for n, t, e in rows:
    cells = " | ".join(f"{100*r['rerr_mean']:.2f} ± {100*r['rerr_std']:.2f}" for r in e["results"])
    print(f"| {n} ({e['scheme']}) | {100*t['test_error']:.2f} | {100*e['clean_error']:.2f} | {cells} | {t['train_seconds']:.0f} |")
PY
