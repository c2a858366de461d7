#!/usr/bin/env bash
# Follow-up to scripts/experiments_fmnist.sh (docs/results.md): where does RandBET beat clipping
# alone? The 8-bit clipped models, plus RandBET trained at 5%, evaluated at 1%, 2%, 5% and 10% over
# 50 patterns (seeds 100-149) on the first LIMIT test images. Reuses the models of the first script
# (runs/fmnist); trains only what is missing. About 25 minutes on 2 cores.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BITROBUST_BIN:-$ROOT/build/bitrobust}
OUT=${OUT:-$ROOT/runs/fmnist}
LIMIT=${LIMIT:-5000}
RATES=${RATES:-1%,2%,5%,10%}
MODELS="rquant8_clip0.1 rquant8_clip0.1_randbet0.1 rquant8_clip0.1_randbet1 rquant8_clip0.1_randbet5"
mkdir -p "$OUT"
train() {  # name, options... (the settings of experiments_fmnist.sh)
  local name=$1; shift
  [[ -f $OUT/$name.pt ]] || "$BIN" train --dataset fashion-mnist --model lenet --norm regn --epochs 3 --seed 1 \
    --quiet --out "$OUT/$name.pt" --json "$OUT/$name.train.json" "$@"
}
train rquant8_clip0.1 --scheme rquant --bits 8 --clip 0.1
train rquant8_clip0.1_randbet0.1 --scheme rquant --bits 8 --clip 0.1 --randbet 0.1%
train rquant8_clip0.1_randbet1 --scheme rquant --bits 8 --clip 0.1 --randbet 1%
train rquant8_clip0.1_randbet5 --scheme rquant --bits 8 --clip 0.1 --randbet 5%
for n in $MODELS; do
  [[ -f $OUT/$n.high.json ]] || "$BIN" eval --model "$OUT/$n.pt" --rates "$RATES" --patterns 50 --seed 100 \
    --limit "$LIMIT" --quiet --json "$OUT/$n.high.json" >/dev/null
done
python3 "$ROOT/scripts/rerr_table.py" "$OUT" .high.json $MODELS
