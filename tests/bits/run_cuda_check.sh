#!/usr/bin/env bash
# Builds and runs tests/bits/cuda_identity_check.cu (CPU vs CUDA bit-identity of the bit layer, and
# CUDA timings) on a machine with nvcc and a GPU; needs no Torch.
# Usage: run_cuda_check.sh [--build-only] [ROOT] [ARCH]   (--build-only: compile and link, for CI)
set -euo pipefail
BUILD_ONLY=0
if [[ ${1:-} == --build-only ]]; then
  BUILD_ONLY=1
  shift
fi
ROOT=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
ARCH=${2:-sm_90}
OUT_DIR=${BUILD_DIR:-/tmp/bitrobust_cuda_check}
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
mkdir -p "$OUT_DIR"
INC=(-I"$ROOT/include" -I"$ROOT/src")
# Same floating-point rules as the CMake build: NOTE [Deterministic floating point].
# The objects compile in parallel (a device session's minutes are counted); any failure stops.
pids=()
g++ -std=c++17 -O3 -ffp-contract=off -fno-math-errno -fopenmp "${INC[@]}" -c "$ROOT/src/kernels/cpu/bit_errors_cpu.cpp" -o "$OUT_DIR/bit_errors_cpu.o" &
pids+=($!)
# (quantize_cpu: the incremental injection in bit_errors_cpu dequantizes what it changes)
for f in bitops_cpu quantize_cpu; do
  g++ -std=c++17 -O3 -ffp-contract=off -fno-math-errno -fopenmp "${INC[@]}" -c "$ROOT/src/kernels/cpu/$f.cpp" -o "$OUT_DIR/$f.o" &
  pids+=($!)
done
for f in bit_errors_cuda bitops_cuda; do
  "$NVCC" -std=c++17 -O3 --fmad=false -arch="$ARCH" "${INC[@]}" -c "$ROOT/src/kernels/cuda/$f.cu" -o "$OUT_DIR/$f.o" &
  pids+=($!)
done
"$NVCC" -std=c++17 -O3 --fmad=false -arch="$ARCH" -Xcompiler -ffp-contract=off "${INC[@]}" \
  -c "$ROOT/tests/bits/cuda_identity_check.cu" -o "$OUT_DIR/check.o" &
pids+=($!)
for pid in "${pids[@]}"; do wait "$pid"; done
"$NVCC" -arch="$ARCH" "$OUT_DIR"/*.o -Xcompiler -fopenmp -o "$OUT_DIR/cuda_identity_check"
((BUILD_ONLY)) && { echo "run_cuda_check: built $OUT_DIR/cuda_identity_check"; exit 0; }
"$OUT_DIR/cuda_identity_check"
