#!/usr/bin/env bash
# The main job on its built-in default: set-up (idempotent), build, then `bitrobust demo`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "${BITROBUST_BUILD_DIR:-$ROOT/build}/bitrobust" demo "$@"
