// Throughput of the bit layer on the CPU, in bytes of codes processed per second, next to a plain
// memcpy of the same bytes. Codes: 5,498,378 uint8 codes (SimpleNet's parameter count, 8 bits).
// Results and the command are recorded in docs/bit_errors.md.
#include <ATen/ATen.h>
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bitrobust/bits/bit_errors.h"
#include "bitrobust/bits/bit_errors_kernels.h"
#include "bitrobust/bits/bitops.h"
#include "bitrobust/bits/bitops_kernels.h"

namespace {

using namespace bitrobust::bits;

constexpr int64_t kCodes = 5498378;

const std::vector<uint8_t>& codes_a() {
  static const std::vector<uint8_t> codes = [] {
    std::vector<uint8_t> v(kCodes);
    std::mt19937_64 rng(1);
    for (auto& x : v) x = static_cast<uint8_t>(rng());
    return v;
  }();
  return codes;
}

const std::vector<uint8_t>& codes_b() {
  static const std::vector<uint8_t> codes = [] {
    std::vector<uint8_t> v(kCodes);
    std::mt19937_64 rng(2);
    for (auto& x : v) x = static_cast<uint8_t>(rng());
    return v;
  }();
  return codes;
}

void set_bytes(benchmark::State& state) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * kCodes);
}

void BM_Memcpy(benchmark::State& state) {
  const auto& in = codes_a();
  std::vector<uint8_t> out(kCodes);
  for (auto _ : state) {
    std::memcpy(out.data(), in.data(), kCodes);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state);
}
BENCHMARK(BM_Memcpy)->UseRealTime();

// Flip the bits of a mask (kernel, preallocated output).
void BM_FlipKernel(benchmark::State& state) {
  omp_set_num_threads(static_cast<int>(state.range(0)));
  const auto& codes = codes_a();
  const auto& mask = codes_b();
  std::vector<uint8_t> out(kCodes);
  for (auto _ : state) {
    bitops_binary_cpu(BitBinaryOp::Xor, codes.data(), mask.data(), out.data(), kCodes, 1);
    benchmark::DoNotOptimize(out.data());
  }
  set_bytes(state);
}
BENCHMARK(BM_FlipKernel)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();

// The torch-facing xor (allocates its output).
void BM_XorTorch(benchmark::State& state) {
  omp_set_num_threads(static_cast<int>(state.range(0)));
  const at::Tensor a = at::from_blob(const_cast<uint8_t*>(codes_a().data()), {kCodes}, at::kByte);
  const at::Tensor b = at::from_blob(const_cast<uint8_t*>(codes_b().data()), {kCodes}, at::kByte);
  for (auto _ : state) {
    at::Tensor out = bit_xor(a, b);
    benchmark::DoNotOptimize(out.data_ptr());
  }
  set_bytes(state);
}
BENCHMARK(BM_XorTorch)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();

void BM_PopcountKernel(benchmark::State& state) {
  omp_set_num_threads(static_cast<int>(state.range(0)));
  const auto& codes = codes_a();
  std::vector<uint8_t> out(kCodes);
  for (auto _ : state) {
    bitops_popcount_cpu(codes.data(), out.data(), kCodes, 1);
    benchmark::DoNotOptimize(out.data());
  }
  set_bytes(state);
}
BENCHMARK(BM_PopcountKernel)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();

void BM_HammingTotalKernel(benchmark::State& state) {
  omp_set_num_threads(static_cast<int>(state.range(0)));
  const auto& a = codes_a();
  const auto& b = codes_b();
  for (auto _ : state) benchmark::DoNotOptimize(bitops_hamming_total_cpu(a.data(), b.data(), kCodes, 1));
  set_bytes(state);
}
BENCHMARK(BM_HammingTotalKernel)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();

// Generates + injects random bit errors at rate `rate_e4` * 1e-4 into one tensor of all codes, once
// per benchmark iteration; returns the flips per call.
double time_injection(benchmark::State& state, int64_t rate_e4) {
  const double p = static_cast<double>(rate_e4) * 1e-4;
  const auto& clean = codes_a();
  std::vector<uint8_t> out(kCodes);
  InjectTask task;
  task.clean = clean.data();
  task.out = out.data();
  task.numel = kCodes;
  task.elem_bytes = 1;
  task.params = make_bit_error_params(0, 8, p, p);
  uint64_t seed = 100;
  int64_t flips = 0;
  for (auto _ : state) {
    flips += inject_bit_errors_cpu(&task, 1, seed++);
    benchmark::DoNotOptimize(out.data());
  }
  set_bytes(state);
  return static_cast<double>(flips) / static_cast<double>(std::max<int64_t>(1, state.iterations()));
}

// Args: rate in units of 1e-4, threads.
void BM_InjectKernel(benchmark::State& state) {
  omp_set_num_threads(static_cast<int>(state.range(1)));
  state.counters["flips_per_call"] = time_injection(state, state.range(0));
}
BENCHMARK(BM_InjectKernel)->ArgNames({"p_e4", "threads"})->ArgsProduct({{1, 10, 100, 1000}, {1, 2}})->UseRealTime();

// The same, one thread, on each instruction set the sampler can use (NOTE [Sampler instruction
// sets]); args: rate in units of 1e-4, instruction set (0 = the best this CPU has, then lower).
void BM_InjectKernelIsa(benchmark::State& state) {
  const std::vector<std::string> isas = cpu_sampler_isas();
  const size_t which = static_cast<size_t>(state.range(1));
  if (which >= isas.size()) {
    state.SkipWithError("this CPU has fewer instruction-set levels");
    return;
  }
  const std::string previous = cpu_sampler_isa();
  set_cpu_sampler_isa(isas[which]);
  omp_set_num_threads(1);
  time_injection(state, state.range(0));
  set_cpu_sampler_isa(previous);
  state.SetLabel(isas[which]);
}
BENCHMARK(BM_InjectKernelIsa)->ArgNames({"p_e4", "isa"})->ArgsProduct({{1, 10, 100, 1000}, {0, 1, 2}})->UseRealTime();

// The model-level torch API over SimpleNet's 54 tensors (CIFAR-10, width 64), 8-bit codes.
std::vector<std::vector<int64_t>> simplenet_shapes() {
  const int64_t convs[][3] = {{3, 64, 3},    {64, 128, 3},   {128, 128, 3},  {128, 128, 3}, {128, 128, 3},
                              {128, 128, 3}, {128, 256, 3},  {256, 256, 3},  {256, 256, 3}, {256, 512, 3},
                              {512, 2048, 1}, {2048, 256, 1}, {256, 256, 3}};
  std::vector<std::vector<int64_t>> shapes;
  for (const auto& c : convs) {
    shapes.push_back({c[1], c[0], c[2], c[2]});
    shapes.push_back({c[1]});  // bias
    shapes.push_back({c[1]});  // norm scale
    shapes.push_back({c[1]});  // norm shift
  }
  shapes.push_back({10, 256});
  shapes.push_back({10});
  return shapes;
}

void BM_InjectModelTorch(benchmark::State& state) {
  const double p = static_cast<double>(state.range(0)) * 1e-4;
  omp_set_num_threads(static_cast<int>(state.range(1)));
  std::vector<CodeTensor> tensors;
  int64_t total = 0, index = 0;
  for (const auto& shape : simplenet_shapes()) {
    CodeTensor t;
    t.name = "p" + std::to_string(index);
    t.bits = 8;
    t.clean = at::randint(0, 256, shape, at::kLong).to(at::kByte);
    t.out = at::empty_like(t.clean);
    t.param_index = index++;
    total += t.clean.numel();
    tensors.push_back(t);
  }
  if (total != kCodes) state.SkipWithError("SimpleNet shapes do not add up to 5,498,378 parameters");
  const ErrorModel model = ErrorModel::parse("random", p);
  uint64_t seed = 100;
  for (auto _ : state) benchmark::DoNotOptimize(inject_bit_errors(tensors, model, seed++));
  set_bytes(state);
}
BENCHMARK(BM_InjectModelTorch)->ArgNames({"p_e4", "threads"})->ArgsProduct({{1, 10, 100, 1000}, {2}})->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
