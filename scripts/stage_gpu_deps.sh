#!/usr/bin/env bash
# Makes the two git-ignored folders a device machine needs beside its PyTorch (docs/gpu.md), from
# this Debian machine's packages (scripts/setup.sh installs them):
#   .stage-deps  CLI11, nlohmann-json, GoogleTest + GoogleMock, Google Benchmark, zlib and RE2: headers,
#                static libraries, CMake and pkg-config files in /usr's layout (include/,
#                lib/x86_64-linux-gnu/, share/), plus libbenchmark's shared library for run time.
#                gpu_check.sh and gpu_cifar10.sh put it in CMAKE_PREFIX_PATH and LD_LIBRARY_PATH.
#   .stage-data  Fashion-MNIST (gpu_check.sh's end-to-end stage), as the data root BITROBUST_DATA.
# Both are rebuilt from scratch. The script prints their sizes and fails if the two together, with
# the tracked files, would pass a device call's 64 MiB upload limit.
# Usage: scripts/stage_gpu_deps.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEPS=$ROOT/.stage-deps
DATA=$ROOT/.stage-data
PACKAGES=(libcli11-dev nlohmann-json3-dev libgtest-dev libgmock-dev libbenchmark-dev libbenchmark1debian zlib1g-dev
  libre2-dev libre2-9)

rm -rf "$DEPS" "$DATA"
mkdir -p "$DEPS" "$DATA/fashion-mnist"
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    { echo "stage_gpu_deps: Debian package $p is not installed (bash scripts/setup.sh installs it)" >&2; exit 1; }
  while IFS= read -r f; do
    # What a build and its run need, not documentation; links are kept as links (libbenchmark.so).
    case $f in
      /usr/include/* | /usr/lib/x86_64-linux-gnu/* | /usr/share/cmake/* | /usr/share/pkgconfig/*) ;;
      *) continue ;;
    esac
    [[ -f $f || -L $f ]] || continue
    [[ -L $f && $(readlink "$f") == /* ]] && continue  # (zlib's libz.so -> /lib/...: the machine's own)
    mkdir -p "$DEPS/$(dirname "${f#/usr/}")"
    cp -P "$f" "$DEPS/${f#/usr/}"
  done < <(dpkg -L "$p")
done
# A link whose target was not staged would make the build pick the machine's own copy, or nothing.
if dangling=$(find "$DEPS" -xtype l) && [[ -n $dangling ]]; then
  echo "stage_gpu_deps: links without their targets: $dangling" >&2
  exit 1
fi

cp /usr/share/datasets/fashion-mnist/*-ubyte.gz "$DATA/fashion-mnist/"
[[ $(find "$DATA/fashion-mnist" -name '*-ubyte.gz' | wc -l) == 4 ]] ||
  { echo "stage_gpu_deps: expected the four Fashion-MNIST files of dataset-fashion-mnist" >&2; exit 1; }

du -sh "$DEPS" "$DATA"
# What a call uploads besides the carried folders: tracked files and untracked ones git does not ignore.
tree=$(cd "$ROOT" && { git ls-files -co --exclude-standard -z | xargs -0 -r stat -c %s -- 2>/dev/null || true; } |
  awk '{s += $1} END {print s + 0}')
total=$(($(du -sb "$DEPS" | cut -f1) + $(du -sb "$DATA" | cut -f1) + tree))
echo "stage_gpu_deps: with the working tree ($tree bytes) a call carrying both uploads about $total bytes"
((total < 64 * 1024 * 1024)) || { echo "stage_gpu_deps: that passes the 64 MiB upload limit" >&2; exit 1; }
