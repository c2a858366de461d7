// The networks' 2x2 max pooling (bitrobust/models/max_pool.h): equal to at::max_pool2d bit for bit
// where our kernels run, with or without a gradient, and ATen's own where the input is not ours.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "bitrobust/models/max_pool.h"
#include "bitrobust/models/models.h"

namespace bitrobust::models {
namespace {

/// Restores the fused-inference switch when a test ends, whatever it set.
struct FusedInferenceGuard {
  bool saved = fused_inference_enabled();
  ~FusedInferenceGuard() { set_fused_inference(saved); }
};

bool same_bits(const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) return false;
  const at::Tensor ac = a.contiguous(), bc = b.contiguous();
  return std::memcmp(ac.data_ptr(), bc.data_ptr(), ac.numel() * ac.element_size()) == 0;
}

/// Seeded normal values with NaN, +-inf and both zeros sprinkled in (about 1 in 50 each).
at::Tensor mixed(at::IntArrayRef shape, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  at::Tensor x = at::randn(shape, gen);
  const at::Tensor pick = at::rand(shape, gen);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  x.masked_fill_(pick < 0.02, nan);
  x.masked_fill_((pick >= 0.02) & (pick < 0.04), inf);
  x.masked_fill_((pick >= 0.04) & (pick < 0.06), -inf);
  x.masked_fill_((pick >= 0.06) & (pick < 0.08), 0.0);
  x.masked_fill_((pick >= 0.08) & (pick < 0.10), -0.0);
  return x;
}

TEST(MaxPool2x2, EqualsAtenBitForBitInInference) {
  const FusedInferenceGuard guard;
  set_fused_inference(true);
  torch::NoGradGuard no_grad;
  for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{
           {2, 3, 8, 8}, {4, 32, 28, 28}, {3, 5, 7, 9}, {1, 1, 2, 2}, {6, 14, 15}, {2, 64, 3, 2}}) {
    const at::Tensor x = mixed(shape, static_cast<uint64_t>(shape[1] * 100 + shape.back()));
    const at::Tensor ours = max_pool2x2(x);
    EXPECT_TRUE(same_bits(ours, at::max_pool2d(x, {2, 2}))) << x.sizes();
    EXPECT_TRUE(ours.is_contiguous());
  }
}

TEST(MaxPool2x2, ChannelsLastInInferenceIsAtensBitForBitAndStaysChannelsLast) {
  const FusedInferenceGuard guard;
  set_fused_inference(true);
  for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{
           {2, 3, 8, 8}, {4, 32, 16, 16}, {3, 5, 7, 9}, {2, 64, 3, 2}}) {
    const at::Tensor x = mixed(shape, static_cast<uint64_t>(shape[1] * 10 + shape.back())).contiguous(
        at::MemoryFormat::ChannelsLast);
    {
      torch::NoGradGuard no_grad;
      EXPECT_TRUE(max_pool2x2_uses_own_kernels(x)) << x.sizes();
      const at::Tensor ours = max_pool2x2(x);
      EXPECT_TRUE(same_bits(ours, at::max_pool2d(x.contiguous(), {2, 2}))) << x.sizes();
      EXPECT_TRUE(ours.is_contiguous(at::MemoryFormat::ChannelsLast)) << x.sizes();
      const at::Tensor bf16 = x.to(at::kBFloat16);
      EXPECT_TRUE(max_pool2x2_uses_own_kernels(bf16));
      const at::Tensor ours_bf16 = max_pool2x2(bf16);
      EXPECT_TRUE(ours_bf16.is_contiguous(at::MemoryFormat::ChannelsLast));
      EXPECT_TRUE(same_bits(ours_bf16, max_pool2x2(bf16.contiguous()))) << x.sizes() << " bf16";
    }
    // Recording a gradient: ATen's pooling (our gradient's kernels are NCHW).
    const at::Tensor leaf = x.clone().requires_grad_();
    EXPECT_FALSE(max_pool2x2_uses_own_kernels(leaf));
  }
}

TEST(MaxPool2x2, Bf16InInferenceIsAtensWithNanForNan) {
  // A network run in bf16 (eval --precision bf16) pools with our kernel: ATen's values bit for bit,
  // except that a NaN may keep its own sign and payload where ATen's goes through float.
  const FusedInferenceGuard guard;
  set_fused_inference(true);
  for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{
           {2, 3, 8, 8}, {4, 32, 28, 28}, {3, 5, 7, 9}, {1, 1, 2, 2}, {6, 14, 15}}) {
    const at::Tensor x = mixed(shape, static_cast<uint64_t>(shape[1] * 10 + shape.back())).to(at::kBFloat16);
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(max_pool2x2_uses_own_kernels(x)) << x.sizes();
    const at::Tensor ours = max_pool2x2(x), aten = at::max_pool2d(x, {2, 2});
    ASSERT_EQ(ours.scalar_type(), at::kBFloat16);
    EXPECT_TRUE(at::equal(ours.isnan(), aten.isnan())) << x.sizes();
    EXPECT_TRUE(same_bits(ours.masked_fill(ours.isnan(), 0), aten.masked_fill(aten.isnan(), 0))) << x.sizes();
  }
  // With a gradient recorded, ATen's (our recorded gradient is float's).
  const at::Tensor x = at::randn({2, 3, 4, 4}).to(at::kBFloat16).requires_grad_();
  EXPECT_FALSE(max_pool2x2_uses_own_kernels(x));
  max_pool2x2(x).sum().backward();
  EXPECT_TRUE(x.grad().defined());
}

TEST(MaxPool2x2, RecordsAtensGradientBitForBit) {
  const FusedInferenceGuard guard;
  set_fused_inference(true);
  for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{{2, 3, 6, 6}, {3, 5, 7, 9}, {4, 9, 5}}) {
    at::Tensor data = mixed(shape, static_cast<uint64_t>(shape[1] + shape.back()));
    data = at::where(at::rand(shape, at::detail::createCPUGenerator(4)) < 0.2, data.round(), data);  // ties
    const at::Tensor ours_in = data.clone().requires_grad_(), aten_in = data.clone().requires_grad_();
    const at::Tensor ours = max_pool2x2(ours_in), aten = at::max_pool2d(aten_in, {2, 2});
    EXPECT_TRUE(same_bits(ours, aten)) << data.sizes();
    ASSERT_TRUE(ours.grad_fn() != nullptr);
    EXPECT_NE(ours.grad_fn()->name(), aten.grad_fn()->name()) << "our kernel recorded the gradient";
    // NaN, -0 and +-inf among the gradients, which arrive strided (a transposed tensor).
    std::vector<int64_t> transposed = aten.sizes().vec();
    std::swap(transposed[transposed.size() - 1], transposed[transposed.size() - 2]);
    const at::Tensor grad_y = mixed(transposed, 99).transpose(-1, -2);
    ASSERT_FALSE(grad_y.is_contiguous());
    ours.backward(grad_y);
    aten.backward(grad_y);
    ASSERT_TRUE(ours_in.grad().defined());
    EXPECT_TRUE(same_bits(ours_in.grad(), aten_in.grad())) << data.sizes();
  }
}

TEST(MaxPool2x2, SecondDerivativesAreAtens) {
  const FusedInferenceGuard guard;
  set_fused_inference(true);
  const at::Tensor data = mixed({2, 3, 6, 7}, 21);
  const at::Tensor v = at::randn({2, 3, 6, 7}, at::detail::createCPUGenerator(22));
  at::Tensor grad_x[2], grad_grad_y[2];
  for (const int ours : {0, 1}) {
    const at::Tensor x = data.clone().requires_grad_();
    const at::Tensor y = ours ? max_pool2x2(x) : at::max_pool2d(x, {2, 2});
    const at::Tensor grad_y = mixed(y.sizes(), 23).requires_grad_();
    grad_x[ours] = torch::autograd::grad({y}, {x}, {grad_y}, /*retain_graph=*/true, /*create_graph=*/true)[0];
    ASSERT_TRUE(grad_x[ours].requires_grad()) << "a graph was built";
    (grad_x[ours] * v).sum().backward();
    grad_grad_y[ours] = grad_y.grad();
  }
  EXPECT_TRUE(same_bits(grad_x[1], grad_x[0]));
  ASSERT_TRUE(grad_grad_y[1].defined());
  EXPECT_TRUE(same_bits(grad_grad_y[1], grad_grad_y[0]));
}

TEST(MaxPool2x2, InputsOurKernelDoesNotTakeGiveAtensResultOrError) {
  const FusedInferenceGuard guard;
  set_fused_inference(true);
  torch::NoGradGuard no_grad;
  const at::Tensor x = mixed({2, 4, 6, 6}, 11);
  const at::Tensor expected = at::max_pool2d(x, {2, 2});
  // Channels-last, a strided view, double: ATen's kernels, same values.
  EXPECT_TRUE(at::equal(max_pool2x2(x.contiguous(at::MemoryFormat::ChannelsLast)).contiguous().nan_to_num(),
                        expected.nan_to_num()));
  const at::Tensor strided = mixed({2, 4, 6, 12}, 12).slice(3, 0, 12, 2);
  EXPECT_TRUE(same_bits(max_pool2x2(strided).contiguous(), at::max_pool2d(strided.contiguous(), {2, 2})));
  const at::Tensor as_double = x.to(at::kDouble);
  EXPECT_TRUE(same_bits(max_pool2x2(as_double), at::max_pool2d(as_double, {2, 2})));
  if (at::hasMKLDNN()) {  // an opaque layout: ATen's oneDNN pooling
    EXPECT_FALSE(max_pool2x2_uses_own_kernels(x.to_mkldnn()));
    const at::Tensor finite = x.nan_to_num();
    EXPECT_TRUE(at::equal(max_pool2x2(finite.to_mkldnn()).to_dense(), at::max_pool2d(finite, {2, 2})));
  }
  EXPECT_TRUE(max_pool2x2_uses_own_kernels(x));
  // Switched off: ATen's.
  set_fused_inference(false);
  EXPECT_FALSE(max_pool2x2_uses_own_kernels(x));
  EXPECT_TRUE(same_bits(max_pool2x2(x), expected));
  set_fused_inference(true);
  // A plane too small for a window is ATen's error, not an empty result.
  EXPECT_THROW(max_pool2x2(at::randn({1, 2, 1, 5})), c10::Error);
  EXPECT_THROW(max_pool2x2(at::randn({4, 4})), c10::Error);
}

ModelSpec small_spec(const char* arch) {
  ModelSpec s;
  s.arch = arch;
  s.norm = "bn";  // not GroupNorm: the pooling is the only op the switch changes
  s.in_channels = std::string(arch) == "lenet" ? 1 : 3;
  s.height = s.width = std::string(arch) == "lenet" ? 28 : 32;
  s.channels = 8;
  s.num_classes = 10;
  return s;
}

TEST(MaxPool2x2, TrainingStepsGiveAtensWeightsBitForBit) {
  const FusedInferenceGuard guard;
  for (const char* arch : {"lenet", "simplenet"}) {
    const ModelSpec s = small_spec(arch);
    std::vector<at::Tensor> finals[2];
    for (const bool ours : {true, false}) {
      set_fused_inference(ours);
      torch::manual_seed(5);
      auto net = build_model(s);
      net->train();
      // The first pooling's input is the first convolution's output: ours to take when switched on.
      const at::Tensor conv1_out = net->named_modules()["conv1"]->as<torch::nn::Conv2d>()
                                       ->forward(at::randn({4, s.in_channels, s.height, s.width}));
      EXPECT_TRUE(conv1_out.requires_grad());
      EXPECT_EQ(max_pool2x2_uses_own_kernels(conv1_out), ours) << arch;
      torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
      auto gen = at::detail::createCPUGenerator(6);
      for (int step = 0; step < 3; ++step) {
        const at::Tensor x = at::randn({4, s.in_channels, s.height, s.width}, gen);
        const at::Tensor labels = at::randint(10, {4}, gen);
        sgd.zero_grad();
        at::cross_entropy_loss(net->forward(x), labels).backward();
        sgd.step();
      }
      for (const auto& p : net->parameters()) finals[ours ? 0 : 1].push_back(p.detach().clone());
    }
    ASSERT_EQ(finals[0].size(), finals[1].size());
    for (size_t i = 0; i < finals[0].size(); ++i) EXPECT_TRUE(same_bits(finals[0][i], finals[1][i])) << arch << " " << i;
  }
}

TEST(MaxPool2x2, NetworksInEvalPoolWithOurKernelAndGiveAtensLogits) {
  const FusedInferenceGuard guard;
  torch::NoGradGuard no_grad;
  for (const char* arch : {"lenet", "simplenet"}) {
    const ModelSpec s = small_spec(arch);
    torch::manual_seed(2);
    auto net = build_model(s);
    net->eval();
    const at::Tensor x = torch::randn({3, s.in_channels, s.height, s.width});
    set_fused_inference(true);
    EXPECT_TRUE(max_pool2x2_uses_own_kernels(net->named_modules()["conv1"]->as<torch::nn::Conv2d>()->forward(x)))
        << arch;
    const at::Tensor ours = net->forward(x);
    set_fused_inference(false);
    EXPECT_TRUE(same_bits(ours, net->forward(x))) << arch;
  }
}

}  // namespace
}  // namespace bitrobust::models
