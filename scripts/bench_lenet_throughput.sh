#!/usr/bin/env bash
# Training throughput of LeNet on Fashion-MNIST (batch 128, 2 threads): bitrobust (float, and
# quantization-aware 8-bit rquant) against PyTorch's Python API, alternating, in one run.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BITROBUST_BIN:-$ROOT/build/bitrobust}
STEPS=${STEPS:-300}  # timed after 10 warm-up steps on both sides
tmp=$(mktemp -d)
# Python's OpenBLAS gets the kernels bitrobust runs: where OpenBLAS does not know the CPU, bitrobust
# chooses them at start (NOTE [OpenBLAS core]) and Python does not.
core=$("$BIN" --version | sed -n 's/.*; OpenBLAS [^,]*, \([A-Za-z0-9]*\) kernels.*/\1/p')
if [ -n "$core" ] && [ -z "${OPENBLAS_CORETYPE:-}" ]; then
  export OPENBLAS_CORETYPE=$core
  echo "OpenBLAS kernels: $core, for both"
fi
for round in 1 2 3; do
  /usr/bin/python3 "$ROOT/scripts/bench_pytorch_lenet.py" --steps "$STEPS" --threads 2
  # The same, with glibc told to keep freed memory as bitrobust does itself (malloc_tuning.h).
  echo -n "(glibc tunables) "
  GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1073741824 \
    /usr/bin/python3 "$ROOT/scripts/bench_pytorch_lenet.py" --steps "$STEPS" --threads 2
  "$BIN" train --dataset fashion-mnist --model lenet --epochs 1 --max-steps "$STEPS" --threads 2 --quiet \
    --out "$tmp/f.pt" --json "$tmp/f.json" >/dev/null 2>&1
  python3 -c "import json;j=json.load(open('$tmp/f.json'));print(f\"bitrobust float lenet: {j['train_steady_images_per_second']:.0f} images/s\")"
  "$BIN" train --dataset fashion-mnist --model lenet --epochs 1 --max-steps "$STEPS" --threads 2 --quiet \
    --scheme rquant --bits 8 --out "$tmp/q.pt" --json "$tmp/q.json" >/dev/null 2>&1
  python3 -c "import json;j=json.load(open('$tmp/q.json'));print(f\"bitrobust QAT rquant8 lenet: {j['train_steady_images_per_second']:.0f} images/s\")"
done
rm -rf "$tmp"
