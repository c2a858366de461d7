#!/usr/bin/env bash
# The built-in default of the main job: on Fashion-MNIST, train (or reuse) small LeNets —
# 8-bit `normal`; 8-bit `rquant` with weight clipping w_max = 0.1; the same with random bit error
# training at p = 1% (RandBET) — then measure their robust
# test error at bit error rates 0.1%, 1% and 5% over 25 seeded patterns, print the tables and write
# a comparison plot. Models and results go to runs/demo/ (delete it to start over).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BITROBUST_BIN:-$ROOT/build/bitrobust}
OUT=${BITROBUST_DEMO_DIR:-$ROOT/runs/demo}
EPOCHS=${BITROBUST_DEMO_EPOCHS:-2}
mkdir -p "$OUT"
train() {  # name, scheme options...
  local name=$1; shift
  if [[ ! -f $OUT/$name.pt ]]; then
    "$BIN" train --dataset fashion-mnist --model lenet --norm regn --epochs "$EPOCHS" --seed 1 \
      --out "$OUT/$name.pt" "$@"
  else
    echo "reusing $OUT/$name.pt"
  fi
}
train normal8 --scheme normal --bits 8
train rquant8_clip0.1 --scheme rquant --bits 8 --clip 0.1
train rquant8_clip0.1_randbet1 --scheme rquant --bits 8 --clip 0.1 --randbet 1%
results=()
for name in normal8 rquant8_clip0.1 rquant8_clip0.1_randbet1; do
  "$BIN" eval --model "$OUT/$name.pt" --rates 0.1%,1%,5% --patterns 25 --seed 100 --limit 3000 \
    --json "$OUT/$name.eval.json" --quiet
  results+=("$OUT/$name.eval.json")
done
# (paired with the clipped model: what RandBET adds to clipping, and what clipping adds to normal8)
"$BIN" compare "${results[@]}" --paired-with 2 --plot "$OUT/compare.svg" \
  --title "LeNet on Fashion-MNIST: RErr vs bit error rate"
