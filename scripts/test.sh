#!/usr/bin/env bash
# The test command: set-up (idempotent), build, then the whole GoogleTest suite under ctest.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
cd "${BITROBUST_BUILD_DIR:-$ROOT/build}"
ctest --output-on-failure -j 2 "$@"
