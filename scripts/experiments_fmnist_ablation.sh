#!/usr/bin/env bash
# The reference's quantization ablation (../shared/REFERENCE.md: global range -> per-layer -> + asymmetric ->
# + unsigned -> + rounding, 8-bit) on Fashion-MNIST with the settings of scripts/experiments_fmnist.sh
# (LeNet, re-parameterized GroupNorm, 3 epochs, seed 1, quantization-aware). Each model evaluated at
# the ablation's rates 0.05% and 0.5%, and 1%, over 50 patterns (seeds 100-149) on the first LIMIT
# test images. Reuses runs/fmnist/rquant8 (the last step). About 25 minutes on 2 cores.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BITROBUST_BIN:-$ROOT/build/bitrobust}
OUT=${OUT:-$ROOT/runs/fmnist}
LIMIT=${LIMIT:-5000}
RATES=${RATES:-0.05%,0.5%,1%}
mkdir -p "$OUT"
# name:scheme, in the ablation's order
STEPS="global8:s8-sym-global1.0-trunc perlayer8:s8-sym-tensor-trunc asym8:s8-asym-tensor-trunc
unsigned8:u8-asym-tensor-trunc rquant8:u8-asym-tensor-round"
names=()
for step in $STEPS; do
  name=${step%%:*} scheme=${step#*:}
  names+=("$name")
  [[ -f $OUT/$name.pt ]] || "$BIN" train --dataset fashion-mnist --model lenet --norm regn --epochs 3 --seed 1 \
    --scheme "$scheme" --quiet --out "$OUT/$name.pt" --json "$OUT/$name.train.json"
  [[ -f $OUT/$name.ablation.json ]] || "$BIN" eval --model "$OUT/$name.pt" --rates "$RATES" --patterns 50 --seed 100 \
    --limit "$LIMIT" --quiet --json "$OUT/$name.ablation.json" >/dev/null
done
python3 "$ROOT/scripts/rerr_table.py" "$OUT" .ablation.json "${names[@]}"
