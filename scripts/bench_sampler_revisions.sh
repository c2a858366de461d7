#!/usr/bin/env bash
# Times the CPU bit error kernel (src/kernels/cpu/bit_errors_cpu.cpp, the quantization kernels it
# calls since the incremental injection, and the headers they use) of two
# git revisions in one run, alternating, with bench/inject_kernel_timing.cpp; no Torch needed.
# Usage: scripts/bench_sampler_revisions.sh OLD_REV [NEW_REV (default: the working tree)] [ROUNDS]
# RATES="0.001 0.005" times those rates instead of 1e-4, 1e-3, 1e-2 and 1e-1; INCREMENTAL=1 times
# the incremental injection into float weights (what a CPU sweep runs) instead of the dense kernel
# (revisions since 2026-11-28, which have it); THREADS (default 1) sets the OpenMP threads. The timing
# program is the working tree's, built against each revision's kernel.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OLD=${1:?usage: bench_sampler_revisions.sh OLD_REV [NEW_REV] [ROUNDS]}
NEW=${2:-}
ROUNDS=${3:-2}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FLAGS=(-std=c++17 -O3 -ffp-contract=off -fno-math-errno -fopenmp)  # as the CMake build
build() {  # build NAME REV|""
  local tree="$WORK/$1"
  mkdir -p "$tree"
  if [[ -n "$2" ]]; then
    git -C "$ROOT" archive "$2" include src/kernels/cpu/bit_errors_cpu.cpp src/kernels/cpu/quantize_cpu.cpp |
      tar -x -C "$tree"
  else
    cp -r "$ROOT/include" "$tree/" && mkdir -p "$tree/src/kernels/cpu" &&
      cp "$ROOT/src/kernels/cpu/bit_errors_cpu.cpp" "$ROOT/src/kernels/cpu/quantize_cpu.cpp" "$tree/src/kernels/cpu/"
  fi
  g++ "${FLAGS[@]}" -I"$tree/include" "$tree/src/kernels/cpu/bit_errors_cpu.cpp" "$tree/src/kernels/cpu/quantize_cpu.cpp" \
    "$ROOT/bench/inject_kernel_timing.cpp" -o "$WORK/$1.bin"
}
build old "$OLD"
build new "$NEW"
for round in $(seq "$ROUNDS"); do
  echo "== round $round: $OLD"; "$WORK/old.bin" "${THREADS:-1}" ${RATES:-}
  echo "== round $round: ${NEW:-working tree}"; "$WORK/new.bin" "${THREADS:-1}" ${RATES:-}
done
