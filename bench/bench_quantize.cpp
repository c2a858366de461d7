// Throughput of the quantization kernels over 1M-5M floats, next to a memcpy of the same bytes.
// bytes_per_second counts bytes read plus bytes written: quantize 4 + c, dequantize c + 4,
// fused fake-quantize 4 + 4, memcpy 4 + 4 per element (c = 1 or 2 code bytes).
//   ./build/bench_quantize [--benchmark_filter=...]   (OMP_NUM_THREADS sets the CPU threads)
#include <ATen/ATen.h>
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "bitrobust/common/philox.h"
#include "bitrobust/quant/quantize_kernels.h"
#include "bitrobust/quant/quantizer.h"

namespace {

using bitrobust::kernels::QuantFormat;
using bitrobust::kernels::QuantRange;
using bitrobust::quant::QuantScheme;

std::vector<float> weights(int64_t n) {
  bitrobust::PhiloxStream rng(1, 2);
  std::vector<float> w(n);
  for (float& x : w) x = (rng.uniform() * 2.0f - 1.0f) * 0.1f;
  return w;
}

// Scheme strings by index: benchmark arguments are integers.
const char* const kSchemes[] = {"u8-sym-global1.0-trunc", "u8-asym-tensor-round", "s4-sym-tensor-round-clip0.1",
                                "u12-asym-tensor-trunc"};

// Symmetric formats read only hi; asymmetric ones use the weights' whole range.
QuantRange range_for(const QuantScheme&) { return {-0.1f, 0.1f}; }

void set_label(benchmark::State& state, const QuantScheme& s) {
  state.SetLabel(s.to_string());
}

void BM_Memcpy(benchmark::State& state) {
  const int64_t n = state.range(0);
  const std::vector<float> w = weights(n);
  std::vector<float> out(n);
  for (auto _ : state) {
    std::memcpy(out.data(), w.data(), n * sizeof(float));
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * 8);
}

void BM_Quantize(benchmark::State& state) {
  const int64_t n = state.range(0);
  const QuantScheme s = QuantScheme::parse(kSchemes[state.range(1)]);
  const QuantFormat f = s.format();
  const QuantRange r = range_for(s);
  const std::vector<float> w = weights(n);
  std::vector<uint16_t> codes(n);
  for (auto _ : state) {
    bitrobust::kernels::quantize_cpu(w.data(), n, 1, &r, f, codes.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * (4 + bitrobust::kernels::code_container_bytes(s.bits)));
  set_label(state, s);
}

void BM_Dequantize(benchmark::State& state) {
  const int64_t n = state.range(0);
  const QuantScheme s = QuantScheme::parse(kSchemes[state.range(1)]);
  const QuantFormat f = s.format();
  const QuantRange r = range_for(s);
  const std::vector<float> w = weights(n);
  std::vector<uint16_t> codes(n);
  std::vector<float> out(n);
  bitrobust::kernels::quantize_cpu(w.data(), n, 1, &r, f, codes.data());
  for (auto _ : state) {
    bitrobust::kernels::dequantize_cpu(codes.data(), n, 1, &r, f, out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * (4 + bitrobust::kernels::code_container_bytes(s.bits)));
  set_label(state, s);
}

void BM_FakeQuantize(benchmark::State& state) {
  const int64_t n = state.range(0);
  const QuantScheme s = QuantScheme::parse(kSchemes[state.range(1)]);
  const QuantFormat f = s.format();
  const QuantRange r = range_for(s);
  const std::vector<float> w = weights(n);
  std::vector<float> out(n);
  for (auto _ : state) {
    bitrobust::kernels::quantize_dequantize_cpu(w.data(), n, 1, &r, f, out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * 8);
  set_label(state, s);
}

// The torch-level call a QAT step makes per parameter: range computation (a min/max pass with the
// finiteness check) plus the fused kernel, into a preallocated output.
void BM_FakeQuantizeTensor(benchmark::State& state) {
  const int64_t n = state.range(0);
  const QuantScheme s = QuantScheme::parse(kSchemes[state.range(1)]);
  const std::vector<float> values = weights(n);
  const at::Tensor w = at::from_blob(const_cast<float*>(values.data()), {n}, at::kFloat).clone();
  at::Tensor out = at::empty_like(w);
  for (auto _ : state) {
    bitrobust::quant::fake_quantize_into(w, out, s, "w");
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * 12);  // min/max read + fused read and write
  set_label(state, s);
}

// All parameters of LeNet-5 (conv 6x1x5x5, 16x6x5x5, fc 400-120-84-10, with biases: 61,706 floats
// in 10 tensors), fake-quantized as one QAT step does.
void BM_FakeQuantizeLeNetParameters(benchmark::State& state) {
  const QuantScheme s = QuantScheme::parse(kSchemes[state.range(0)]);
  const std::vector<std::vector<int64_t>> shapes = {{6, 1, 5, 5}, {6},  {16, 6, 5, 5}, {16}, {120, 400},
                                                    {120},        {84, 120}, {84},   {10, 84},     {10}};
  std::vector<at::Tensor> params, outs;
  int64_t total = 0;
  for (const auto& shape : shapes) {
    params.push_back(at::randn(shape) * 0.1);
    outs.push_back(at::empty_like(params.back()));
    total += params.back().numel();
  }
  for (auto _ : state) {
    for (size_t i = 0; i < params.size(); ++i) bitrobust::quant::fake_quantize_into(params[i], outs[i], s, "p");
    benchmark::ClobberMemory();
  }
  state.counters["floats"] = static_cast<double>(total);
  state.SetBytesProcessed(state.iterations() * total * 12);
  set_label(state, s);
}

void sizes_and_schemes(benchmark::internal::Benchmark* b) {
  for (const int64_t n : {int64_t{1} << 20, int64_t{5} << 20}) {
    for (int scheme = 0; scheme < 4; ++scheme) b->Args({n, scheme});
  }
}

BENCHMARK(BM_Memcpy)->Arg(int64_t{1} << 20)->Arg(int64_t{5} << 20)->UseRealTime();
BENCHMARK(BM_Quantize)->Apply(sizes_and_schemes)->UseRealTime();
BENCHMARK(BM_Dequantize)->Apply(sizes_and_schemes)->UseRealTime();
BENCHMARK(BM_FakeQuantize)->Apply(sizes_and_schemes)->UseRealTime();
BENCHMARK(BM_FakeQuantizeTensor)->Apply(sizes_and_schemes)->UseRealTime();
BENCHMARK(BM_FakeQuantizeLeNetParameters)->DenseRange(0, 3)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
