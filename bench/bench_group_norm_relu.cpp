// Fused GroupNorm + ReLU (bitrobust/models/group_norm_relu.h) against eager LibTorch on the CPU, on
// the GroupNorm inputs of LeNet and SimpleNet at batch 500, with 2x2 max pooling after it or in the
// same pass, and LeNet inference with the fused path on and off. Like the CLI, it keeps freed
// memory in the process (malloc_tuning.h: no block comes from a fresh, page-faulted mmap since the
// change of 2026-12-04; the tables in docs/measurements.md before it include those faults for
// outputs above 32 MiB, as inference then paid them). BM_FusedKernel writes into a preallocated
// buffer: the kernel alone.
//   ./build/bench_group_norm_relu [--benchmark_repetitions=3]   (threads: OMP_NUM_THREADS, else 2)
// bytes_per_second counts 8 bytes per element (one read of x, one write of y: the least traffic
// the op needs), whatever the variant moves; items_per_second counts elements (images for the
// network benchmark); the bf16 variants count the same 8 bytes per element, more than they move
// (2 read and 2 written, or 0.5 when pooled).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "bitrobust/models/group_norm_relu.h"
#include "bitrobust/models/group_norm_relu_kernels.h"
#include "bitrobust/models/max_pool.h"
#include "bitrobust/models/models.h"
#include "cpu_bench_main.h"

namespace {

constexpr double kEps = 1e-5;

struct Shape {
  const char* name;
  std::vector<int64_t> sizes;
  int64_t groups;  // max(1, min(32, C / 2)), as the networks choose
};

// Benchmark arguments are integers: shapes by index.
const Shape kShapes[] = {
    {"lenet.act1 [500,32,28,28] g16", {500, 32, 28, 28}, 16},
    {"lenet.act2 [500,64,14,14] g32", {500, 64, 14, 14}, 32},
    {"lenet.act3 [500,256] g32", {500, 256}, 32},
    {"simplenet.act1 [500,64,32,32] g32", {500, 64, 32, 32}, 32},
};

struct Inputs {
  at::Tensor x, scale, bias;
};

Inputs inputs_for(const Shape& s) {
  auto gen = at::detail::createCPUGenerator(11);
  const int64_t channels = s.sizes[1];
  return {at::randn(s.sizes, gen), at::rand({channels}, gen) + 0.5, at::rand({channels}, gen) - 0.5};
}

void report(benchmark::State& state, const Shape& s, const at::Tensor& x) {
  state.SetBytesProcessed(state.iterations() * x.numel() * 8);
  state.SetItemsProcessed(state.iterations() * x.numel());
  state.SetLabel(s.name);
}

// Times `op(inputs, shape)` (returning the output tensor) on the shape of state.range(0), with
// the inputs (x and the affine parameters) in dtype.
template <typename Op>
void time_group_norm_relu(benchmark::State& state, Op op, at::ScalarType dtype = at::kFloat,
                          at::MemoryFormat layout = at::MemoryFormat::Contiguous) {
  const Shape& s = kShapes[state.range(0)];
  Inputs in = inputs_for(s);
  in = {in.x.to(dtype).contiguous(layout), in.scale.to(dtype), in.bias.to(dtype)};
  torch::NoGradGuard no_grad;
  for (auto _ : state) {
    at::Tensor y = op(in, s);
    benchmark::DoNotOptimize(y.data_ptr());
  }
  report(state, s, in.x);
}

/// What the networks ran before: at::relu(at::group_norm(...)), ReLU out of place.
void BM_EagerGroupNormRelu(benchmark::State& state) {
  time_group_norm_relu(state, [](const Inputs& in, const Shape& s) {
    return at::relu(at::group_norm(in.x, s.groups, in.scale, in.bias, kEps));
  });
}

/// Eager with the ReLU in place: no second output tensor, still a second pass over the data.
void BM_EagerGroupNormReluInPlace(benchmark::State& state) {
  time_group_norm_relu(state, [](const Inputs& in, const Shape& s) {
    at::Tensor y = at::group_norm(in.x, s.groups, in.scale, in.bias, kEps);
    return y.relu_();
  });
}

void BM_FusedGroupNormRelu(benchmark::State& state) {
  time_group_norm_relu(state, [](const Inputs& in, const Shape& s) {
    return bitrobust::models::group_norm_relu(in.x, s.groups, in.scale, in.bias, kEps);
  });
}

/// What the networks ran before GroupNorm + ReLU + pooling became one pass: the fused op, then our
/// 2x2 max pooling (4-D shapes only).
void BM_FusedGroupNormReluThenPool(benchmark::State& state) {
  time_group_norm_relu(state, [](const Inputs& in, const Shape& s) {
    return bitrobust::models::max_pool2x2(bitrobust::models::group_norm_relu(in.x, s.groups, in.scale, in.bias, kEps));
  });
}

/// The same in one pass (group_norm_relu's pool2x2), as LeNet and SimpleNet run it before a pooling.
void BM_FusedGroupNormReluPooled(benchmark::State& state) {
  time_group_norm_relu(state, [](const Inputs& in, const Shape& s) {
    return bitrobust::models::group_norm_relu(in.x, s.groups, in.scale, in.bias, kEps, {}, /*pool2x2=*/true);
  });
}

/// bf16 (eval --precision bf16 on the CPU), argument: the shape. Eager is what a bf16 network ran
/// before our kernels took bf16: ATen's bf16 GroupNorm (parameters in bf16, as the network holds
/// them), ReLU, and for 4-D shapes ATen's 2x2 max pooling.
void BM_EagerBf16GroupNormReluPool(benchmark::State& state) {
  time_group_norm_relu(
      state,
      [](const Inputs& in, const Shape& s) {
        at::Tensor y = at::relu(at::group_norm(in.x, s.groups, in.scale, in.bias, kEps));
        return s.sizes.size() == 4 ? at::max_pool2d(y, {2, 2}) : y;
      },
      at::kBFloat16);
}

/// The same through group_norm_relu on bf16 (pooled in the same pass for 4-D shapes).
void BM_FusedBf16GroupNormReluPool(benchmark::State& state) {
  time_group_norm_relu(
      state,
      [](const Inputs& in, const Shape& s) {
        return bitrobust::models::group_norm_relu(in.x, s.groups, in.scale, in.bias, kEps, {},
                                                  /*pool2x2=*/s.sizes.size() == 4);
      },
      at::kBFloat16);
}

/// The pooled op on a channels-last input (NOTE [Channels-last GroupNorm]), as SimpleNet runs it
/// in inference on the CPU; arguments: the shape (4-D), and 1 for bf16. Beside
/// BM_FusedGroupNormReluPooled and BM_FusedBf16GroupNormReluPool, the same op on NCHW input.
void BM_FusedGroupNormReluPooledChannelsLast(benchmark::State& state) {
  time_group_norm_relu(
      state,
      [](const Inputs& in, const Shape& s) {
        return bitrobust::models::group_norm_relu(in.x, s.groups, in.scale, in.bias, kEps, {}, /*pool2x2=*/true);
      },
      state.range(1) != 0 ? at::kBFloat16 : at::kFloat, at::MemoryFormat::ChannelsLast);
}

/// The CPU kernel alone, into a preallocated output (no allocation, no page faults).
void BM_FusedKernel(benchmark::State& state) {
  const Shape& s = kShapes[state.range(0)];
  const Inputs in = inputs_for(s);
  at::Tensor y = at::empty_like(in.x);
  bitrobust::kernels::GroupNormShape shape;
  shape.batch = s.sizes[0];
  shape.channels = s.sizes[1];
  shape.spatial = in.x.numel() / (shape.batch * shape.channels);
  shape.groups = s.groups;
  for (auto _ : state) {
    bitrobust::kernels::group_norm_relu_cpu(in.x.data_ptr<float>(), shape, in.scale.data_ptr<float>(),
                                            in.bias.data_ptr<float>(), nullptr, kEps, y.data_ptr<float>());
    benchmark::ClobberMemory();
  }
  report(state, s, in.x);
}

/// Times the forward pass of `spec`'s network in eval mode without gradients on a batch of random
/// inputs; items_per_second = images/s.
void time_inference(benchmark::State& state, const bitrobust::models::ModelSpec& spec, int64_t batch) {
  torch::manual_seed(0);
  auto net = bitrobust::models::build_model(spec);
  net->eval();
  torch::NoGradGuard no_grad;
  const at::Tensor images = torch::randn({batch, spec.in_channels, spec.height, spec.width});
  for (auto _ : state) {
    at::Tensor logits = net->forward(images);
    benchmark::DoNotOptimize(logits.data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * batch);
}

/// LeNet (GroupNorm) forward in eval mode without gradients, batch 500; argument: fused path on (1)
/// or off (0). items_per_second = images/s.
void BM_LeNetInference(benchmark::State& state) {
  const bool fused = state.range(0) != 0;
  const bool saved = bitrobust::models::fused_inference_enabled();
  bitrobust::models::set_fused_inference(fused);
  time_inference(state, bitrobust::models::ModelSpec(), 500);  // (lenet, gn, 1x28x28)
  state.SetLabel(fused ? "fused" : "eager");
  bitrobust::models::set_fused_inference(saved);
}

/// SimpleNet (re-parameterized GroupNorm, CIFAR-10 sized input) forward in eval mode without
/// gradients, batch 100; arguments: the width, and channels-last inference on (1) or off (0).
/// items_per_second = images/s.
void BM_SimpleNetInference(benchmark::State& state) {
  const bool saved = bitrobust::models::channels_last_inference_enabled();
  bitrobust::models::set_channels_last_inference(state.range(1) != 0);
  bitrobust::models::ModelSpec spec;
  spec.arch = "simplenet";
  spec.norm = "regn";
  spec.in_channels = 3;
  spec.height = spec.width = 32;
  spec.channels = state.range(0);
  time_inference(state, spec, 100);
  state.SetLabel(state.range(1) != 0 ? "channels last" : "NCHW");
  bitrobust::models::set_channels_last_inference(saved);
}

BENCHMARK(BM_EagerGroupNormRelu)->DenseRange(0, 3)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EagerGroupNormReluInPlace)->DenseRange(0, 3)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FusedGroupNormRelu)->DenseRange(0, 3)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FusedKernel)->DenseRange(0, 3)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FusedGroupNormReluThenPool)->Arg(0)->Arg(1)->Arg(3)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FusedGroupNormReluPooled)->Arg(0)->Arg(1)->Arg(3)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EagerBf16GroupNormReluPool)->DenseRange(0, 3)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FusedBf16GroupNormReluPool)->DenseRange(0, 3)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LeNetInference)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FusedGroupNormReluPooledChannelsLast)
    ->ArgsProduct({{0, 1, 3}, {0, 1}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SimpleNetInference)->ArgsProduct({{16, 64}, {0, 1}})->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

BITROBUST_CPU_BENCHMARK_MAIN()
