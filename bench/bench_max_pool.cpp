// 2x2 max pooling on the CPU (bitrobust/models/max_pool.h) against ATen's at::max_pool2d, on the
// pooling inputs of LeNet (batch 500) and SimpleNet (CIFAR-10, width 64, batch 100), in inference.
//   ./build/bench_max_pool [--benchmark_repetitions=3]   (threads: OMP_NUM_THREADS, else 2)
// bytes_per_second counts the input's bytes once and the output's once (the least traffic the op
// needs); items_per_second counts input elements.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <vector>

#include "bitrobust/models/max_pool.h"
#include "bitrobust/models/max_pool_kernels.h"
#include "cpu_bench_main.h"

namespace {

struct Shape {
  const char* name;
  std::vector<int64_t> sizes;
};

// Benchmark arguments are integers: shapes by index.
const Shape kShapes[] = {
    {"lenet.pool1 [500,32,28,28]", {500, 32, 28, 28}},  {"lenet.pool2 [500,64,14,14]", {500, 64, 14, 14}},
    {"simplenet.pool1 [100,128,32,32]", {100, 128, 32, 32}}, {"simplenet.pool2 [100,256,16,16]", {100, 256, 16, 16}},
    {"simplenet.pool3 [100,256,8,8]", {100, 256, 8, 8}},     {"simplenet.pool4 [100,512,4,4]", {100, 512, 4, 4}},
};

template <typename Op>
void time_pool(benchmark::State& state, Op op) {
  const Shape& s = kShapes[state.range(0)];
  const at::Tensor x = at::randn(s.sizes, at::detail::createCPUGenerator(3));
  torch::NoGradGuard no_grad;
  for (auto _ : state) {
    at::Tensor y = op(x);
    benchmark::DoNotOptimize(y.data_ptr());
  }
  state.SetBytesProcessed(state.iterations() * x.numel() * 5);  // 4 bytes in, 1 out per input element
  state.SetItemsProcessed(state.iterations() * x.numel());
  state.SetLabel(s.name);
}

/// What the networks ran before: ATen's pooling, which also computes the argmax indices.
void BM_AtenMaxPool2d(benchmark::State& state) {
  time_pool(state, [](const at::Tensor& x) { return at::max_pool2d(x, {2, 2}); });
}

void BM_MaxPool2x2(benchmark::State& state) {
  time_pool(state, [](const at::Tensor& x) { return bitrobust::models::max_pool2x2(x); });
}

/// The kernel alone, into a preallocated output.
void BM_MaxPool2x2Kernel(benchmark::State& state) {
  const Shape& s = kShapes[state.range(0)];
  const at::Tensor x = at::randn(s.sizes, at::detail::createCPUGenerator(3));
  at::Tensor y = at::empty({s.sizes[0], s.sizes[1], s.sizes[2] / 2, s.sizes[3] / 2});
  for (auto _ : state) {
    bitrobust::kernels::max_pool2x2_cpu(x.data_ptr<float>(), s.sizes[0] * s.sizes[1], s.sizes[2], s.sizes[3],
                                        y.data_ptr<float>());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * x.numel() * 5);
  state.SetItemsProcessed(state.iterations() * x.numel());
  state.SetLabel(s.name);
}

BENCHMARK(BM_AtenMaxPool2d)->DenseRange(0, 5)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MaxPool2x2)->DenseRange(0, 5)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MaxPool2x2Kernel)->DenseRange(0, 5)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

BITROBUST_CPU_BENCHMARK_MAIN()
