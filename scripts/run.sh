#!/usr/bin/env bash
# The main job on its built-in default: set-up (idempotent), build, then scripts/demo.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
BITROBUST_BIN="${BITROBUST_BUILD_DIR:-$ROOT/build}/bitrobust" exec bash "$ROOT/scripts/demo.sh" "$@"
