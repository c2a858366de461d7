#!/usr/bin/env bash
# Copies CIFAR-10 (../shared/datasets/cifar10, six files of about 28 MB) into three git-ignored
# folders of about 57 MB each, .stage-cifar-a/-b/-c, so that a device machine can receive them one
# folder per call (its upload limit is 64 MiB); scripts/gpu_cifar10.sh puts them back together there.
# Usage: scripts/stage_cifar10.sh [SOURCE_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SRC=${1:-$ROOT/../shared/datasets/cifar10}
declare -A parts=([a]="data_batch_1 data_batch_2" [b]="data_batch_3 data_batch_4" [c]="data_batch_5 test_batch_jpeg")
for part in a b c; do
  dir=$ROOT/.stage-cifar-$part
  mkdir -p "$dir"
  for f in ${parts[$part]}; do
    [[ -f $SRC/$f.bin.gz ]] || { echo "stage_cifar10: $SRC/$f.bin.gz is missing" >&2; exit 1; }
    cp "$SRC/$f.bin.gz" "$dir/"
  done
  (cd "$SRC" && grep -E "$(echo ${parts[$part]} | sed 's/ /|/')" SHA256SUMS) > "$dir/SHA256SUMS"
  (cd "$dir" && sha256sum --quiet -c SHA256SUMS)
  du -sh "$dir"
done
