#!/usr/bin/env bash
# Builds the libFuzzer harnesses of fuzz/ with Clang, AddressSanitizer and UndefinedBehaviorSanitizer
# (library included) into build-fuzz/, then runs each for SECONDS (default 60) from its seed corpus
# (fuzz/corpus/<harness>/, copied to build-fuzz/corpus/ where new inputs accumulate). A crash, a
# sanitizer report or a failed property stops that harness and leaves the input in build-fuzz/.
# Usage: bash scripts/fuzz.sh [harness ...]   (default: every fuzz/fuzz_*.cpp)
# RUNS=0 runs each harness over its seeds only, with no new inputs: what CI does, so that the
# harnesses keep building and their seeds keep passing without CI depending on what a search finds.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BITROBUST_FUZZ_BUILD_DIR:-$ROOT/build-fuzz}
SECONDS_EACH=${SECONDS_EACH:-60}
command -v clang++ >/dev/null || { echo "fuzz: needs clang++ (Debian: clang, libclang-rt-14-dev, libomp-dev)"; exit 1; }

SAN="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"
if [[ ! -f $BUILD/build.ninja ]]; then
  CC=clang CXX=clang++ cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS="$SAN" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
    -DBITROBUST_BUILD_TESTS=OFF -DBITROBUST_BUILD_BENCHMARKS=OFF -DBITROBUST_BUILD_FUZZERS=ON \
    ${BITROBUST_CMAKE_ARGS:-} >/dev/null
fi
harnesses=("$@")
if ((${#harnesses[@]} == 0)); then
  for f in "$ROOT"/fuzz/fuzz_*.cpp; do harnesses+=("$(basename "$f" .cpp)"); done
fi
ninja -C "$BUILD" -j "${JOBS:-2}" "${harnesses[@]}" bitrobust_cli

# LibTorch's own allocations at exit are not ours to report; its OpenMP runtime is a second one.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
export OMP_NUM_THREADS=1

# Seeds that need a model: a tiny quantized LeNet (4-bit codes), its patterns of three error models.
SEEDS=$BUILD/seeds
if [[ ! -f $SEEDS/done ]]; then
  mkdir -p "$SEEDS/fuzz_model_file" "$SEEDS/fuzz_pattern_file"
  "$BUILD/bitrobust" train --dataset fashion-mnist --model lenet --width 2 --norm regn --scheme rquant --bits 4 \
    --clip 0.1 --max-steps 2 --epochs 1 --quiet --out "$SEEDS/fuzz_model_file/tiny.pt" \
    --checkpoint "$SEEDS/tiny.ckpt"
  m=$SEEDS/fuzz_model_file/tiny.pt
  "$BUILD/bitrobust" pattern --model "$m" --rate 0.1% --seed 3 --out "$SEEDS/fuzz_pattern_file/random.txt"
  "$BUILD/bitrobust" pattern --model "$m" --rate 0.05% --seed 4 --error-model stuck-at-1 \
    --out "$SEEDS/fuzz_pattern_file/stuck1.txt"
  "$BUILD/bitrobust" pattern --model "$m" --rate 1% --seed 5 --error-model lsb2,0to1=0.001 --layers conv \
    --out "$SEEDS/fuzz_pattern_file/lsb2.txt"
  touch "$SEEDS/done"
fi

status=0
for h in "${harnesses[@]}"; do
  corpus=$BUILD/corpus/$h
  mkdir -p "$corpus"
  # (a checkpoint gets past the settings check only for the harness's own run: it writes its seed,
  # again whenever the harness is rebuilt, as what a checkpoint records may have changed)
  if [[ $h == fuzz_checkpoint && (! -f $SEEDS/$h/run.ckpt || $BUILD/$h -nt $SEEDS/$h/run.ckpt) ]]; then
    mkdir -p "$SEEDS/$h"
    BITROBUST_FUZZ_SEED_DIR=$SEEDS/$h "$BUILD/$h" -runs=0 "$SEEDS/$h" >"$BUILD/$h.seed.log" 2>&1 ||
      { echo "fuzz: $h could not write its seed checkpoint ($BUILD/$h.seed.log)"; status=1; continue; }
  fi
  for seeds in "$ROOT/fuzz/corpus/$h" "$SEEDS/$h"; do
    [[ -d $seeds ]] && cp -n "$seeds"/* "$corpus"/ 2>/dev/null || true
  done
  if [[ -n ${RUNS:-} ]]; then
    limit=(-runs="$RUNS")
    echo "fuzz: $h over its seeds, $RUNS new inputs"
  else
    limit=(-max_total_time="$SECONDS_EACH")
    echo "fuzz: $h for ${SECONDS_EACH}s"
  fi
  dict=()
  [[ -f $ROOT/fuzz/$h.dict ]] && dict=(-dict="$ROOT/fuzz/$h.dict")  # (words the mutator splices in)
  if ! (cd "$BUILD" && "./$h" "${limit[@]}" "${dict[@]}" -rss_limit_mb=4096 -max_len="${MAX_LEN:-400000}" \
        -print_final_stats=1 "$corpus" 2>&1 | tail -n 40); then
    status=1
  fi
done
exit $status
