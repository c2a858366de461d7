#!/usr/bin/env bash
# Syntax-checks the host code that is compiled only against a CUDA Torch (`#ifdef BITROBUST_WITH_CUDA`:
# the CUDA tests, device dispatch) with this machine's CPU Torch headers and the CUDA toolkit's, so
# that a mistake there is found by CI, not in a GPU session's few minutes. No code is generated and
# no GPU is needed. Usage: check_cuda_host_code.sh [BUILD_DIR]   (a configured Ninja build; default build)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
CUDA_INC=${CUDA_INC:-/usr/local/cuda/include}
[[ -f $CUDA_INC/cuda_runtime.h ]] || { echo "check_cuda_host_code: no CUDA headers in $CUDA_INC, skipped"; exit 0; }
[[ -f $BUILD/build.ninja ]] || { echo "check_cuda_host_code: $BUILD is not a configured Ninja build" >&2; exit 1; }
BUILD=$(cd "$BUILD" && pwd)  # as CMake wrote it into the commands (absolute)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bitrobust" "$tmp/c10/cuda/impl"
sed 's/^#define BITROBUST_WITH_CUDA_01 .*/#define BITROBUST_WITH_CUDA_01 1/' "$BUILD/generated/bitrobust/config.h" \
  >"$tmp/bitrobust/config.h"
grep -q 'BITROBUST_WITH_CUDA_01 1' "$tmp/bitrobust/config.h"
# A CPU-only Torch ships c10/cuda headers without the one its CMake writes for CUDA builds.
printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' >"$tmp/c10/cuda/impl/cuda_cmake_macros.h"
ninja -C "$BUILD" -t commands >"$tmp/commands"
cd "$ROOT"
# The files with such code, and those including a header with such code (src/bits/device_dispatch.h).
mapfile -t files < <({
  grep -rl --include='*.cpp' BITROBUST_WITH_CUDA src tests tools bench
  grep -rl --include='*.h' BITROBUST_WITH_CUDA src include tests | while read -r header; do
    grep -rlF --include='*.cpp' "$(basename "$header")\"" src tests tools bench
  done
} | sort -u)
check() {  # file -> 0 if it compiles
  local cmd
  cmd=$(grep -F -- " -c $ROOT/$1" "$tmp/commands" | head -1 | sed 's/^.*ccache //; s| -o [^ ]*| |; s| -MD -MT [^ ]* -MF [^ ]*||')
  [[ -n $cmd ]] || { echo "check_cuda_host_code: no compile command for $1 in $BUILD" >&2; return 1; }
  cmd=${cmd/-I$BUILD\/generated/-I$tmp -I$BUILD/generated}
  # Without the CUDA config the file would compile with CUDA off and prove nothing.
  [[ $cmd == *"-I$tmp "* ]] || { echo "check_cuda_host_code: no -I$BUILD/generated in the command for $1" >&2; return 1; }
  if eval "$cmd -fsyntax-only -I$CUDA_INC"; then echo "ok  $1"; else echo "FAILED $1" >&2; return 1; fi
}
export -f check
export ROOT BUILD tmp CUDA_INC
printf '%s\n' "${files[@]}" | xargs -P "$(nproc)" -I{} bash -c 'check {}'
echo "check_cuda_host_code: ${#files[@]} files with CUDA-only host code compile"
