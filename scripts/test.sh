#!/usr/bin/env bash
# The test command: set-up (idempotent), build, then the whole GoogleTest suite under ctest.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
BUILD_DIR=$(realpath -m "${BITROBUST_BUILD_DIR:-$ROOT/build}")  # (as setup.sh resolved it)
cd "$BUILD_DIR"
# A hung test (a kernel that never ends in the CUDA emulation) fails alone instead of taking CI's
# whole time; a build configured without tests (BITROBUST_BUILD_TESTS=OFF, kept in its cache) is
# an error, not a pass with nothing run.
ctest --output-on-failure --timeout 600 --no-tests=error -j 2 "$@"
