#!/usr/bin/env bash
# shellcheck disable=SC2317  # (the stage functions run through `bash -c` under `timeout`)
# On a GPU machine with PyTorch 2.x: build against its CUDA LibTorch, run the CUDA tests (the CUDA
# twins against their CPU kernels), the end-to-end benchmarks (bench/bench_end_to_end.cpp: a table of
# each figure next to its baseline), the reference's 13 x 50 x 9000 suite, compute-sanitizer on the
# bit layer's kernels, the main commands on the GPU against the CPU, and last the whole test suite.
# The most valuable results come first, every stage has a time limit, and every result is written as
# soon as it exists.
# Usage: scripts/gpu_check.sh [tests|bench]   (stop after the CUDA tests, or after the sanitizer runs)
# Results: $OUT when set (the device tool brings its files back), else runs/gpu: gpu_check.log,
# summary.txt (stage, exit status, seconds), bench.json, suite.json, e_cuda.json, e_cpu.json, and
# build.log when the build fails. Stage limits can be changed with LIMIT_<STAGE>=seconds, the whole
# run's with BUDGET_S (default 480).
# Dependencies missing there (CLI11, nlohmann-json, GoogleTest, Google Benchmark, zlib headers) can be
# staged in .stage-deps (a copy of Debian's files, same layout); data in .stage-data (BITROBUST_DATA).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
STOP_AFTER=${1:-}
R=${OUT:-$ROOT/runs/gpu}
mkdir -p "$R"
exec > >(tee -a "$R/gpu_check.log") 2>&1
TEE_PID=$!
SUMMARY=$R/summary.txt
: >"$SUMMARY"
START=$(date +%s)

# BUDGET_S: the whole run's seconds (default 480, for a device call of 540 s): each stage gets at
# most what is left of it, less a margin for the summary, and a stage that cannot start in time is
# skipped, so the summary is always printed before the call's own limit.
DEADLINE=$((START + ${BUDGET_S:-480}))

# stage NAME LIMIT COMMAND...: runs COMMAND under a time limit and records one summary line.
stage() {
  local name=$1 limit=$2 t0 rc=0
  shift 2
  local left=$((DEADLINE - $(date +%s) - 10))
  if ((limit <= 0)); then  # (timeout 0 would mean no limit at all)
    printf '%-22s skipped (LIMIT %s)\n' "$name" "$limit" | tee -a "$SUMMARY"
    return 0
  fi
  if ((left < 15)); then
    printf '%-22s skipped (out of the %s s budget)\n' "$name" "${BUDGET_S:-480}" | tee -a "$SUMMARY"
    return 124
  fi
  ((limit > left)) && limit=$left
  t0=$(date +%s)
  echo "=== $name (limit ${limit} s)"
  export STAGE_LIMIT_S=$limit  # (for a stage that runs its own timeouts inside)
  timeout -k 10 "$limit" "$@" || rc=$?
  local note=""
  ((rc == 124 || rc == 137)) && note=" (stopped at its ${limit} s limit)"
  printf '%-22s exit %-3s %5s s%s\n' "$name" "$rc" "$(($(date +%s) - t0))" "$note" | tee -a "$SUMMARY"
  return "$rc"
}
finish() {
  echo "=== summary ($(($(date +%s) - START)) s in all)"
  cat "$SUMMARY"
  # tee writes the log's last lines only once our output is closed: wait for it before exiting.
  exec >&- 2>&-
  wait "$TEE_PID" 2>/dev/null
  exit "${1:-0}"
}

D=$ROOT/.stage-deps
# One Python start for all three facts (importing torch takes seconds).
mapfile -t TORCH_INFO < <(python3 -c 'import torch,os;print(torch.utils.cmake_prefix_path);print(os.path.join(os.path.dirname(torch.__file__),"lib"));print(torch.__version__, "CUDA", torch.version.cuda)')
TP=${TORCH_INFO[0]:-}
TORCH_LIB=${TORCH_INFO[1]:-}
[[ -n $TP ]] || { echo "gpu_check: python3 cannot import torch" >&2; finish 1; }
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
echo "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
echo "Torch: ${TORCH_INFO[2]:-?}; nvcc: $("$NVCC" --version 2>&1 | tail -1); cores: $(nproc)"
export LD_LIBRARY_PATH=$D/lib/x86_64-linux-gnu:$TORCH_LIB:${LD_LIBRARY_PATH:-}
export BITROBUST_DATA=${BITROBUST_DATA:-$ROOT/.stage-data}

build() {
  local extra=()
  # (RE2 from .stage-deps too: a newer RE2 of the machine's with a CMake package would otherwise
  # be linked against the staged re2.h)
  [[ -d $D ]] && extra=(-DZLIB_INCLUDE_DIR="$D/include" -DZLIB_LIBRARY="$D/lib/x86_64-linux-gnu/libz.a"
    -DCMAKE_DISABLE_FIND_PACKAGE_re2=ON)
  # TORCH_CUDA_ARCH_LIST: Torch's CMake would otherwise add sm_90a and compile every .cu file twice.
  TORCH_CUDA_ARCH_LIST=9.0 cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TP;$D" \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_CUDA_COMPILER="$NVCC" -DBITROBUST_BUILD_BENCHMARKS=ON "${extra[@]}" \
    >"$R/build.log" 2>&1 &&
    cmake --build build-gpu -j "$(nproc)" --target bitrobust_cli bitrobust_tests bitrobust_kernel_tests \
      bench_end_to_end -- -k 0 >>"$R/build.log" 2>&1
  local rc=$?
  if ((rc != 0)); then
    # (-k 0: every file that fails is compiled and reported, so that one device call shows all the
    # fixes a Torch of another version needs, not only the first)
    echo "distinct errors:"
    grep -E 'error:|CMake Error|undefined reference' "$R/build.log" | sort | uniq -c | sort -rn | awk 'NR <= 60'
    echo "first failure in context:"
    grep -m1 -B2 -A12 -E 'error:|CMake Error|FAILED' "$R/build.log"
    return "$rc"
  fi
  rm -f "$R/build.log"  # (kept only when it explains a failure: $OUT returns at most 8 files)
}
# A rebuild that fails must not leave the last good binaries to be tested as if they were new.
rm -f build-gpu/bitrobust build-gpu/bitrobust_tests build-gpu/bitrobust_kernel_tests build-gpu/bench_end_to_end \
  build-gpu/cuda_identity_check/cuda_identity_check
export R D TP NVCC
export -f build
stage build "${LIMIT_BUILD:-420}" bash -c build || finish 1

cuda_tests() {
  # (awk, not head: a reader that stops early would kill the tests with SIGPIPE)
  local rc=0
  build-gpu/bitrobust_kernel_tests --gtest_brief=1 >"$R/kernel_tests.txt" 2>&1 || rc=1
  tail -3 "$R/kernel_tests.txt"
  # (ArchiveCheck: the checks before LibTorch parses a file pass the archives this Torch writes)
  build-gpu/bitrobust_tests --gtest_filter='*Cuda*:*CUDA*:ArchiveCheck.*' >"$R/cuda_tests.txt" 2>&1 || rc=1
  grep -E "OK \]|FAILED|SKIPPED|Skipped|PASSED|tests ran|Failure|error" "$R/cuda_tests.txt" | awk 'NR <= 80'
  # The Torch-free CPU/CUDA identity check of every kernel (the bit layer's in place, misaligned,
  # 1- to 32-bit codes, p up to 1; quantization, GroupNorm + ReLU, batch assembly) and the injection's
  # kernel-alone timings (docs/bit_errors.md); CI runs the same check emulated (docs/gpu.md).
  # (SANITIZE emptied: the sanitizers have a stage of their own)
  SANITIZE="" BUILD_DIR=$PWD/build-gpu/cuda_identity_check bash tests/bits/run_cuda_check.sh "$PWD" sm_90 \
    >"$R/identity.txt" 2>&1 || rc=1
  grep -E "MISMATCH|CUDA error|error:|checks,|passed,|TIMING" "$R/identity.txt" | awk 'NR <= 40'
  rm -f "$R/kernel_tests.txt" "$R/cuda_tests.txt" "$R/identity.txt"  # (the log holds what matters; $OUT returns 8 files)
  return "$rc"
}
export -f cuda_tests
stage cuda-tests "${LIMIT_CUDA_TESTS:-180}" bash -c cuda_tests
[[ $STOP_AFTER == tests ]] && finish 0

# Issue 7's table (all but the suite), then the suite in its own process: a suite that runs past its
# limit must not take the table's figures with it. (BM_WeightInjector, the fused kernel, runs at the
# rates of issue 4's table only.)
stage bench "${LIMIT_BENCH:-240}" build-gpu/bench_end_to_end \
  '--benchmark_filter=-BM_ReferenceSuite|BM_WeightInjector/p_e4:(2|5|20)/|BM_InjectDequantize/p_e4:(2|5|20)/' \
  --benchmark_out="$R/bench.json" --benchmark_out_format=json
[[ -s $R/bench.json ]] && python3 scripts/bench_table.py "$R/bench.json"
stage suite "${LIMIT_SUITE:-150}" env BITROBUST_BENCH_FULL_SUITE=1 build-gpu/bench_end_to_end \
  --benchmark_filter=BM_ReferenceSuite --benchmark_out="$R/suite.json" --benchmark_out_format=json
[[ -s $R/bench.json && -s $R/suite.json ]] && python3 scripts/bench_table.py "$R/bench.json" "$R/suite.json"

# The identity check's kernels again, on small problems, under compute-sanitizer (shared-memory races
# in the warp-per-chunk injection kernel, out-of-bounds accesses). Runs only where the sanitizer
# accepts the device (Firecracker machines; gVisor ones refuse it, which is reported, not failed).
sanitize() {
  [[ -x build-gpu/cuda_identity_check/cuda_identity_check ]] || { echo "no identity check built"; return 1; }
  # Each tool's own limit fits the stage's: an inner timeout is a process group of its own, which
  # the stage's timeout would not stop, leaving a sanitizer on the GPU into the next call.
  local tools=${SANITIZE-racecheck memcheck} n per stage_limit=${STAGE_LIMIT_S:-0}
  n=$(wc -w <<<"$tools")
  per=${SANITIZE_LIMIT_S:-40}
  ((n > 0 && stage_limit > 0 && (stage_limit - 5) / n < per)) && per=$(((stage_limit - 5) / n))
  ((per >= 1)) || per=1  # (0 would mean no limit)
  BUILD_DIR=$PWD/build-gpu/cuda_identity_check SANITIZE=$tools \
    SANITIZE_LIMIT_S=$per bash tests/bits/run_cuda_check.sh --sanitize-only "$PWD" sm_90
}
export -f sanitize
stage sanitize "${LIMIT_SANITIZE:-90}" bash -c sanitize
[[ $STOP_AFTER == bench ]] && finish 0

# The main commands on the GPU (Fashion-MNIST, LeNet, 1 epoch), and the sweep's CPU/CUDA agreement.
end_to_end() {
  local B=build-gpu/bitrobust W=runs/gpu
  mkdir -p "$W"
  rm -f "$W"/*.pt "$W"/*.ckpt
  time $B train --dataset fashion-mnist --model lenet --epochs 1 --device cuda --out $W/f.pt --quiet || return 1
  time $B train --dataset fashion-mnist --model lenet --epochs 1 --device cuda --bits 8 --scheme rquant --clip 0.1 \
    --out $W/q.pt --quiet || return 1
  time $B train --dataset fashion-mnist --model lenet --epochs 1 --device cuda --bits 8 --scheme rquant --clip 0.1 \
    --randbet 1% --randbet-start 10 --out $W/r.pt --quiet || return 1
  $B test --model $W/q.pt --device cuda && $B test --model $W/q.pt --device cpu || return 1
  # bits_changed depends only on the pattern, not on the images: 2000 images suffice for the comparison.
  time $B eval --model $W/q.pt --device cuda --rates 0.1%,1%,5% --patterns 10 --limit 2000 --quiet \
    --json "$R/e_cuda.json" >/dev/null || return 1
  time $B eval --model $W/q.pt --device cpu --rates 0.1%,1%,5% --patterns 10 --limit 2000 --quiet \
    --json "$R/e_cpu.json" >/dev/null || return 1
  python3 - "$R/e_cuda.json" "$R/e_cpu.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
same = True
for ra, rb in zip(a["results"], b["results"]):
    equal = ra["bits_changed"] == rb["bits_changed"]
    same &= equal
    print("rate", ra["rate"], "bits_changed identical:", equal,
          "RErr cuda/cpu", round(ra["rerr_mean"], 5), round(rb["rerr_mean"], 5))
sys.exit(0 if same else 1)
PY
  # Issue 7's precision check: tf32 (the default above) and bf16 against fp32's 95% intervals.
  for p in fp32 bf16; do
    $B eval --model $W/q.pt --device cuda --precision $p --rates 0.1%,1%,5% --patterns 10 --limit 2000 --quiet \
      --json "$W/e_$p.json" >/dev/null || return 1
  done
  python3 - "$W/e_fp32.json" "$R/e_cuda.json" "$W/e_bf16.json" <<'PY'
import json, sys
fp32, tf32, bf16 = (json.load(open(p)) for p in sys.argv[1:4])
for name, other in (("tf32", tf32), ("bf16", bf16)):
    for ra, rb in zip(fp32["results"], other["results"]):
        lo, hi = ra["rerr_ci95"]
        print(f"precision {name} rate {ra['rate']}: RErr {rb['rerr_mean']:.5f}, fp32 {ra['rerr_mean']:.5f} "
              f"(95% CI {lo:.5f}-{hi:.5f}): {'inside' if lo <= rb['rerr_mean'] <= hi else 'OUTSIDE'}")
PY
  # A model file written by our C++ opens in this PyTorch (README: "Model files").
  python3 - "$W/q.pt" <<'PY'
import json, sys, torch
m = torch.jit.load(sys.argv[1], map_location="cpu")
meta = json.loads(m.meta)
params, codes = dict(m.model.named_parameters()), dict(m.quant_codes.named_buffers())
assert int(m.bitrobust_format) == 1 and len(codes) == len(meta["quantization"]["params"]) > 0
print(f"PyTorch {torch.__version__} torch.jit.load {sys.argv[1]}: {len(params)} parameters, "
      f"{len(codes)} code tensors, scheme {meta['quantization']['scheme']}")
PY
}
export -f end_to_end
stage end-to-end "${LIMIT_END_TO_END:-150}" bash -c end_to_end

# Everything else (CI runs it on the CPU with Torch 1.13; here it checks Torch 2.x and the CUDA build).
# (--gtest_brief: failures and the count only, so a run stopped at its limit still shows them.)
stage all-tests "${LIMIT_ALL_TESTS:-150}" build-gpu/bitrobust_tests --gtest_brief=1 --gtest_filter='-*Cuda*:*CUDA*:ArchiveCheck.*'
finish 0
