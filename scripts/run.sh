#!/usr/bin/env bash
# The main job on its built-in default: set-up (idempotent), build, then scripts/demo.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
BUILD_DIR=$(realpath -m "${BITROBUST_BUILD_DIR:-$ROOT/build}")  # (relative to the caller's folder, as in setup.sh)
cd "$ROOT"
BITROBUST_BIN="$BUILD_DIR/bitrobust" exec bash "$ROOT/scripts/demo.sh" "$@"
