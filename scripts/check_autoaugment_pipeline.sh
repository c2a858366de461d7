#!/usr/bin/env bash
# End-to-end check of the CIFAR-10 training augmentation against Pillow on real images: our CPU
# kernel augments the first COUNT training images (crop with mean fill, flip, AutoAugment; no
# Cutout), and Pillow 9.4 redoes each from the same random choices. Needs python3-pil, python3-numpy
# and CIFAR-10 in data/cifar10 (or DATA=dir). PREVIEW=file.png also writes originals and augmented
# images side by side. Usage: scripts/check_autoaugment_pipeline.sh [COUNT] [SEED] [EPOCH]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
COUNT=${1:-2000} SEED=${2:-1} EPOCH=${3:-0}
DATA=${DATA:-$ROOT/data/cifar10}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
g++ -std=c++17 -O2 -ffp-contract=off -fno-math-errno -fopenmp -I"$ROOT/include" \
  "$ROOT/tools/checks/autoaugment_pipeline_dump.cpp" "$ROOT/src/kernels/cpu/augment_cpu.cpp" \
  "$ROOT/src/kernels/cpu/autoaugment_cpu.cpp" -o "$WORK/dump"
/usr/bin/python3 - "$DATA/data_batch_1.bin.gz" "$COUNT" "$WORK/images.u8" <<'PY'
import gzip, sys
import numpy as np
raw = np.frombuffer(gzip.open(sys.argv[1]).read(), dtype=np.uint8).reshape(-1, 3073)
raw[: int(sys.argv[2]), 1:].tofile(sys.argv[3])
PY
"$WORK/dump" "$WORK/images.u8" "$COUNT" "$SEED" "$EPOCH" "$WORK/ours"
/usr/bin/python3 "$ROOT/scripts/check_autoaugment_pipeline.py" "$WORK/images.u8" "$WORK/ours" ${PREVIEW:+"$PREVIEW"}
