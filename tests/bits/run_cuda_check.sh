#!/usr/bin/env bash
# Builds and runs tests/bits/cuda_identity_check.cu (every CUDA kernel against its CPU twin, and
# CUDA timings) on a machine with nvcc and a GPU; needs no Torch.
# Usage: run_cuda_check.sh [--build-only|--sanitize-only] [ROOT] [ARCH]
#   --build-only: compile and link, for CI; --sanitize-only: only the sanitizer runs below, on the
#   program an earlier run built in BUILD_DIR.
# SANITIZE="memcheck racecheck synccheck initcheck" (any of them) then reruns the bit layer's part of
# the check (--bits-only) with small problems under each compute-sanitizer tool, SANITIZE_LIMIT_S
# seconds each (default 60). A tool that reports an error, or under which the check fails or crashes,
# fails the run; one that cannot run on this machine (compute-sanitizer refuses the device under some
# virtual machines, "Device not supported") or runs out of time is reported and does not.
set -euo pipefail
BUILD_ONLY=0 SANITIZE_ONLY=0
case ${1:-} in
  --build-only) BUILD_ONLY=1 && shift ;;
  --sanitize-only) SANITIZE_ONLY=1 && shift ;;
esac
ROOT=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
ARCH=${2:-sm_90}
OUT_DIR=${BUILD_DIR:-/tmp/bitrobust_cuda_check}
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
mkdir -p "$OUT_DIR"
sanitize() {
  local rc=0 tool log trc summary
  local sanitizer=${SANITIZER:-$(command -v compute-sanitizer || echo "$(dirname "$NVCC")/compute-sanitizer")}
  for tool in ${SANITIZE:-}; do
    if [[ ! -x $sanitizer ]]; then
      echo "SANITIZER $tool: not run ($sanitizer not found)"
      continue
    fi
    log=$OUT_DIR/sanitize_$tool.log
    trc=0
    timeout "${SANITIZE_LIMIT_S:-60}" "$sanitizer" --tool "$tool" --error-exitcode 3 \
      "$OUT_DIR/cuda_identity_check" --small --bits-only >"$log" 2>&1 || trc=$?
    summary=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$log" | tail -1 || true)
    case $trc in
      0) echo "SANITIZER $tool: clean (${summary:-no summary line})" ;;
      3)
        echo "SANITIZER $tool: ERRORS (${summary:-see $log})"
        grep -E "^========= +(Invalid|Race|Error|Barrier|Uninitialized|at |by |in )" "$log" | awk 'NR <= 20' || true
        rc=1
        ;;
      124) echo "SANITIZER $tool: not finished within ${SANITIZE_LIMIT_S:-60} s" ;;
      *)
        if grep -q "not supported" "$log"; then
          echo "SANITIZER $tool: could not run here: $(grep -m1 "not supported" "$log")"
        else  # (a mismatch under the sanitizer, or a crash)
          echo "SANITIZER $tool: the check failed under it (exit $trc):"
          awk 'NR <= 20' "$log"
          rc=1
        fi
        ;;
    esac
  done
  return "$rc"
}
((SANITIZE_ONLY)) && { sanitize; exit $?; }
# The link takes every object here: none may be left from a source since renamed or removed.
rm -f "$OUT_DIR"/*.o
INC=(-I"$ROOT/include" -I"$ROOT/src")
# Same floating-point rules as the CMake build: NOTE [Deterministic floating point].
# The objects compile in parallel (a device session's minutes are counted); any failure stops.
pids=()
# Every kernel and its CPU twin: the check compares all of them.
for src in "$ROOT"/src/kernels/cpu/*.cpp; do
  g++ -std=c++17 -O3 -ffp-contract=off -fno-math-errno -fopenmp "${INC[@]}" -c "$src" -o "$OUT_DIR/$(basename "$src" .cpp).o" &
  pids+=($!)
done
for src in "$ROOT"/src/kernels/cuda/*.cu; do
  "$NVCC" -std=c++17 -O3 --fmad=false -lineinfo -arch="$ARCH" "${INC[@]}" -c "$src" -o "$OUT_DIR/$(basename "$src" .cu).o" &
  pids+=($!)
done
"$NVCC" -std=c++17 -O3 --fmad=false -arch="$ARCH" -Xcompiler -ffp-contract=off "${INC[@]}" \
  -c "$ROOT/tests/bits/cuda_identity_check.cu" -o "$OUT_DIR/check.o" &
pids+=($!)
for pid in "${pids[@]}"; do wait "$pid"; done
"$NVCC" -arch="$ARCH" "$OUT_DIR"/*.o -Xcompiler -fopenmp -o "$OUT_DIR/cuda_identity_check"
((BUILD_ONLY)) && { echo "run_cuda_check: built $OUT_DIR/cuda_identity_check"; exit 0; }
rc=0
"$OUT_DIR/cuda_identity_check" || rc=$?
sanitize || rc=1
exit "$rc"
