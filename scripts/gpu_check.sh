#!/usr/bin/env bash
# On a GPU machine with PyTorch 2.x: build against its CUDA LibTorch, run every test (CUDA twins
# against their CPU kernels included), then the end-to-end benchmarks (bench/bench_end_to_end.cpp: a
# table of each figure next to its baseline), then time the main commands on the GPU.
# Usage: scripts/gpu_check.sh [tests|bench]   (stop after the tests, or after the benchmarks)
# Dependencies missing there (CLI11, nlohmann-json, GoogleTest, zlib headers) can be staged in
# .stage-deps (a copy of Debian's files, same layout); data in .stage-data (BITROBUST_DATA).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
D=$ROOT/.stage-deps
TP=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
TORCH_LIB=$(python3 -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))')
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
extra=()
[[ -d $D ]] && extra=(-DZLIB_INCLUDE_DIR=$D/include -DZLIB_LIBRARY=$D/lib/x86_64-linux-gnu/libz.a)
time cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TP;$D" \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_CUDA_COMPILER="$NVCC" -DBITROBUST_BUILD_BENCHMARKS=ON "${extra[@]}" || exit 1
time cmake --build build-gpu -j "$(nproc)" 2>&1 | grep -E "error|FAILED|warning: unused" | head -40
[[ -x build-gpu/bitrobust_tests ]] || exit 1
export LD_LIBRARY_PATH=$D/lib/x86_64-linux-gnu:$TORCH_LIB:${LD_LIBRARY_PATH:-}
export BITROBUST_DATA=${BITROBUST_DATA:-$ROOT/.stage-data}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
build-gpu/bitrobust_kernel_tests --gtest_brief=1 2>&1 | tail -3
build-gpu/bitrobust_tests --gtest_filter="*Cuda*:*CUDA*" 2>&1 | grep -E "OK \\]|FAILED|SKIPPED|PASSED|tests ran"
build-gpu/bitrobust_tests --gtest_brief=1 2>&1 | tail -25
[[ ${1:-} == tests ]] && exit 0
mkdir -p runs/gpu
BITROBUST_BENCH_FULL_SUITE=1 build-gpu/bench_end_to_end --benchmark_format=json --benchmark_out=runs/gpu/bench.json \
  --benchmark_out_format=json >/dev/null 2>runs/gpu/bench.err || tail -5 runs/gpu/bench.err
python3 scripts/bench_table.py runs/gpu/bench.json
build-gpu/bench_augment 2>&1 | grep BM_MakeBatch
[[ ${1:-} == bench ]] && exit 0
B=build-gpu/bitrobust
mkdir -p runs/gpu
time $B train --dataset fashion-mnist --model lenet --epochs 1 --device cuda --out runs/gpu/f.pt --quiet
time $B train --dataset fashion-mnist --model lenet --epochs 1 --device cuda --bits 8 --scheme rquant --clip 0.1 --out runs/gpu/q.pt --quiet
$B test --model runs/gpu/q.pt --device cuda
$B test --model runs/gpu/q.pt --device cpu
time $B eval --model runs/gpu/q.pt --device cuda --rates 0.1%,1%,5% --patterns 10 --quiet --json runs/gpu/e_cuda.json
time $B eval --model runs/gpu/q.pt --device cpu --rates 0.1%,1%,5% --patterns 10 --limit 10000 --quiet --json runs/gpu/e_cpu.json
python3 - <<'PY'
import json
a=json.load(open("runs/gpu/e_cuda.json")); b=json.load(open("runs/gpu/e_cpu.json"))
for ra, rb in zip(a["results"], b["results"]):
    print("rate", ra["rate"], "bits_changed identical:", ra["bits_changed"] == rb["bits_changed"],
          "rerr cuda/cpu", round(ra["rerr_mean"],5), round(rb["rerr_mean"],5))
PY
