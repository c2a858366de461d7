#!/usr/bin/env bash
# ctest: how run_cuda_check.sh --sanitize-only reads compute-sanitizer's outcomes (the GPU check's
# sanitize stage), with fake sanitizers around the emulated identity check (NOTE [CUDA emulation]):
# a clean run passes, reported errors and a check that fails under the tool fail, a tool that cannot
# run on the machine or runs out of time is reported and does not fail.
# Usage: run_cuda_check_sanitize_test.sh ROOT EMULATED_CHECK
set -euo pipefail
ROOT=$1
CHECK=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ln -s "$CHECK" "$tmp/cuda_identity_check"
fake() {  # name, body (the sanitizer is called as: --tool T --error-exitcode 3 PROGRAM ARGS...)
  printf '#!/usr/bin/env bash\n%s\n' "$2" >"$tmp/$1"
  chmod +x "$tmp/$1"
}
fake clean 'shift 4; "$@"; rc=$?; echo "========= ERROR SUMMARY: 0 errors"; exit $rc'
fake errors 'echo "========= Invalid __shared__ write of size 8 bytes"; echo "=========     at inject_chunks_kernel"; echo "========= ERROR SUMMARY: 1 error"; exit 3'
fake unsupported 'echo "========= Error: Device not supported"; exit 1'
fake crash 'echo "Segmentation fault"; exit 139'
fake slow 'sleep 20'
expect() {  # fake, expected exit status, expected line, [time limit]
  local rc=0
  BUILD_DIR=$tmp SANITIZER=$tmp/$1 SANITIZE=racecheck SANITIZE_LIMIT_S=${4:-60} \
    bash "$ROOT/tests/bits/run_cuda_check.sh" --sanitize-only "$ROOT" >"$tmp/out" 2>&1 || rc=$?
  if [[ $rc != "$2" ]] || ! grep -q -- "$3" "$tmp/out"; then
    echo "FAILED $1: exit $rc (expected $2), output:"
    cat "$tmp/out"
    exit 1
  fi
  echo "ok $1: $(head -1 "$tmp/out")"
}
expect clean 0 "SANITIZER racecheck: clean (========= ERROR SUMMARY: 0 errors)"
# (the clean tool ran the bit layer's part of the check on small problems: as many comparisons as the
# check makes when run so directly, fewer than without --bits-only)
bits_only=$("$CHECK" --small --bits-only | grep -E '^[0-9]+ passed, 0 failed$')
everything=$("$CHECK" --small | grep -E '^[0-9]+ passed, 0 failed$')
(( ${bits_only%% *} < ${everything%% *} )) || { echo "FAILED: --bits-only made no fewer checks ($bits_only, $everything)"; exit 1; }
grep -qx "$bits_only" "$tmp/sanitize_racecheck.log" || { echo "FAILED: the check did not run as --small --bits-only ($bits_only)"; cat "$tmp/sanitize_racecheck.log"; exit 1; }
expect errors 1 "at inject_chunks_kernel"
expect unsupported 0 "could not run here"
expect crash 1 "the check failed under it (exit 139)"
expect slow 0 "not finished within 2 s" 2
