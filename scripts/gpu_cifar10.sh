#!/usr/bin/env bash
# Issue 6's CIFAR-10 reproduction on a GPU machine: SimpleNet at width 64 with re-parameterized
# GroupNorm and the reference's initialisation (Kaiming normal, zero biases), 8-bit; per-layer (the
# reference's "normal" row), clipping 0.1, clipping + RandBET 0.1% and 1%; hold-out protocol; RErr at 0.1% and 1% over PATTERNS
# patterns on the first 9000 test images (the reference's protocol, on batch 5 here).
#
# On this side: scripts/stage_cifar10.sh, then carry .stage-cifar-a, -b, -c in three calls (one per
# call: 64 MiB upload limit); build with `scripts/gpu_check.sh tests` (build-gpu). Then
#   BUDGET_S=480 EPOCHS=30 MODELS="perlayer8 clip" scripts/gpu_cifar10.sh
# stops every step in time (exit 3) and resumes from checkpoints when called again while the machine
# is held. Results and checkpoints: runs/gpu-cifar10 (copy what you need to $OUT).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DATA=$ROOT/.stage-data/cifar10
mkdir -p "$DATA"
for f in data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch_jpeg; do
  src=$(ls "$ROOT"/.stage-cifar-*/"$f.bin.gz" 2>/dev/null | head -1 || true)
  [[ -n $src ]] || { echo "gpu_cifar10: $f.bin.gz is not staged (scripts/stage_cifar10.sh, then carry .stage-cifar-a/b/c)" >&2; exit 1; }
  ln -sf "$src" "$DATA/$f.bin.gz"
done
TORCH_LIB=$(python3 -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))')
export LD_LIBRARY_PATH=$ROOT/.stage-deps/lib/x86_64-linux-gnu:$TORCH_LIB:${LD_LIBRARY_PATH:-}
[[ -x build-gpu/bitrobust ]] || { echo "gpu_cifar10: build-gpu/bitrobust missing: run scripts/gpu_check.sh tests first" >&2; exit 1; }
nvidia-smi --query-gpu=name --format=csv,noheader
export BITROBUST_BIN=$ROOT/build-gpu/bitrobust OUT=${OUT_DIR:-$ROOT/runs/gpu-cifar10} DATA_ROOT=$ROOT/.stage-data
export WIDTH=64 NORM=regn INIT=reference DEVICE=cuda LIMIT=9000 RATES=${RATES:-0.1%,1%}
export EPOCHS=${EPOCHS:-250} PATTERNS=${PATTERNS:-50}
export MODELS=${MODELS:-perlayer8 clip clip_randbet0.1 clip_randbet1}
[[ -n ${BUDGET_S:-} ]] && export DEADLINE=$(($(date +%s) + BUDGET_S))
exec bash scripts/experiments_cifar10.sh
