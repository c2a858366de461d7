#!/usr/bin/env bash
# Packs CIFAR-10's five training batches (../shared/datasets/cifar10; the hold-out protocol trains on
# 1-4 and tests on 5) for a device machine, whose calls upload at most 64 MiB: one tar of the
# uncompressed batches, compressed with xz (116 MB, against 142 MB as the gzip files), split in two
# parts, .stage-cifar-a and .stage-cifar-b (git-ignored), so that two calls carry it: the first
# beside .stage-deps, as large as fits with it and the tree, the second alone (the script checks
# that both fit).
# scripts/gpu_cifar10.sh joins and unpacks the parts there and checks every batch's sha256, which
# .stage-cifar-a/SHA256SUMS holds.
# With --with-jpeg, the JPEG test copy (only --cifar-protocol jpeg uses it) goes to .stage-cifar-c,
# for a third call.
# Usage: scripts/stage_cifar10.sh [--with-jpeg] [SOURCE_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WITH_JPEG=0
if [[ ${1:-} == --with-jpeg ]]; then
  WITH_JPEG=1
  shift
fi
SRC=${1:-$ROOT/../shared/datasets/cifar10}
LIMIT=$((64 * 1024 * 1024))
BATCHES=(data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5)
bytes() { du -sb "$@" | awk '{s += $1} END {print s}'; }
[[ -d $ROOT/.stage-deps ]] || { echo "stage_cifar10: no .stage-deps to size the first call with (scripts/stage_gpu_deps.sh)" >&2; exit 1; }
# What a call uploads besides the carried folders: tracked files and untracked ones git does not ignore.
tree=$(cd "$ROOT" && { git ls-files -co --exclude-standard -z | xargs -0 -r stat -c %s -- 2>/dev/null || true; } |
  awk '{s += $1} END {print s + 0}')

sums=$(cd "$SRC" && grep -E "($(IFS='|'; echo "${BATCHES[*]}"))\.bin\.gz" SHA256SUMS || true)
if [[ $(wc -l <<<"$sums") != "${#BATCHES[@]}" ]] || ! (cd "$SRC" && sha256sum --quiet -c - <<<"$sums"); then
  echo "stage_cifar10: the training batches in $SRC do not match its SHA256SUMS" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for b in "${BATCHES[@]}"; do
  gzip -dc "$SRC/$b.bin.gz" >"$work/$b.bin"
done
(cd "$work" && sha256sum "${BATCHES[@]/%/.bin}") >"$work/SHA256SUMS"
echo "stage_cifar10: compressing 5 batches with xz -9 (about 2.5 minutes on one core)"
tar -C "$work" -cf - "${BATCHES[@]/%/.bin}" | xz -9 >"$work/train.tar.xz"
rm -rf "$ROOT/.stage-cifar-a" "$ROOT/.stage-cifar-b" "$ROOT/.stage-cifar-c"
mkdir -p "$ROOT/.stage-cifar-a" "$ROOT/.stage-cifar-b"
# The first part as large as the first call can carry beside .stage-deps and the tree (4 MiB to
# spare, for the commits made after staging: 1 MiB had shrunk to 0.9 within a day), the rest in
# the second: halves no longer fit once .stage-deps and the tree grow.
first_part=$((LIMIT - $(bytes "$ROOT/.stage-deps") - tree - 4 * 1024 * 1024))
((first_part > 0)) || { echo "stage_cifar10: .stage-deps and the tree leave no room for the archive in the first call" >&2; exit 1; }
head -c "$first_part" "$work/train.tar.xz" >"$work/train.tar.xz.part-00"
tail -c +"$((first_part + 1))" "$work/train.tar.xz" >"$work/train.tar.xz.part-01"
(($(bytes "$work/train.tar.xz.part-01") + tree < LIMIT)) ||
  { echo "stage_cifar10: the archive does not fit in two calls" >&2; exit 1; }
mv "$work/train.tar.xz.part-00" "$work/SHA256SUMS" "$ROOT/.stage-cifar-a/"
mv "$work/train.tar.xz.part-01" "$ROOT/.stage-cifar-b/"
if ((WITH_JPEG)); then
  mkdir -p "$ROOT/.stage-cifar-c"
  cp "$SRC/test_batch_jpeg.bin.gz" "$ROOT/.stage-cifar-c/"
  (cd "$SRC" && grep test_batch_jpeg SHA256SUMS) >"$ROOT/.stage-cifar-c/SHA256SUMS"
  (cd "$ROOT/.stage-cifar-c" && sha256sum --quiet -c SHA256SUMS)
fi
du -sh "$ROOT"/.stage-cifar-*

# The first call carries .stage-cifar-a with .stage-deps and the tracked files.
first=$(($(bytes "$ROOT/.stage-cifar-a") + $(bytes "$ROOT/.stage-deps") + tree))
echo "stage_cifar10: first call (.stage-cifar-a, .stage-deps, working tree): $first bytes of $LIMIT"
((first < LIMIT)) || { echo "stage_cifar10: the first call would pass the upload limit" >&2; exit 1; }
