#include <gtest/gtest.h>
#include <torch/torch.h>

#include "bitrobust/common/error.h"
#include "bitrobust/models/models.h"
#include "test_util.h"

using bitrobust::models::build_model;
using bitrobust::models::ModelSpec;
using bitrobust::models::parameter_count;

namespace {
ModelSpec spec(const std::string& arch, const std::string& norm, int64_t c, int64_t hw, int64_t classes = 10) {
  ModelSpec s;
  s.arch = arch;
  s.norm = norm;
  s.in_channels = c;
  s.height = s.width = hw;
  s.num_classes = classes;
  return s;
}
}  // namespace

TEST(Models, SimpleNetCifarHasReferenceParameterCountAndTensorCount) {
  torch::manual_seed(0);
  auto net = build_model(spec("simplenet", "gn", 3, 32));
  // REFERENCE.md: 5,498,378 parameters in 54 tensors with GroupNorm at width 64.
  EXPECT_EQ(parameter_count(*net), 5498378);
  EXPECT_EQ(net->parameters().size(), 54u);
  const auto y = net->forward(torch::randn({2, 3, 32, 32}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 10}));
}

TEST(Models, SimpleNet28DropsTwoConvolutions) {
  auto net = build_model(spec("simplenet", "gn", 1, 28));
  // 11 convolutions + 11 norms, two tensors each, + linear.
  EXPECT_EQ(net->parameters().size(), 46u);
  EXPECT_EQ(net->forward(torch::randn({3, 1, 28, 28})).sizes(), (std::vector<int64_t>{3, 10}));
}

TEST(Models, EveryArchitectureAndNormGivesLogitsOfTheRightShape) {
  for (const auto& arch : bitrobust::models::architecture_names()) {
    for (const auto& norm : bitrobust::models::normalization_names()) {
      ModelSpec s = spec(arch, norm, 3, 32, 7);
      if (arch == "wrn") { s.depth = 10; s.widen = 1; }
      auto net = build_model(s);
      net->train();
      const auto y = net->forward(torch::randn({4, 3, 32, 32}));
      EXPECT_EQ(y.sizes(), (std::vector<int64_t>{4, 7})) << arch << "/" << norm;
      EXPECT_TRUE(torch::isfinite(y).all().item<bool>()) << arch << "/" << norm;
      // Every parameter gets a gradient: so SGD keeps a momentum buffer for each, which a resumed
      // checkpoint must hold (train/checkpoint.cpp).
      y.sum().backward();
      for (const auto& p : net->named_parameters())
        EXPECT_TRUE(p.value().grad().defined()) << arch << "/" << norm << " " << p.key();
    }
  }
}

TEST(Models, LeNetParameterCountFollowsFormula) {
  auto net = build_model(spec("lenet", "none", 1, 28));
  const int64_t c = 32;
  const int64_t expected = (1 * c * 25 + c) + (c * 2 * c * 25 + 2 * c) + (2 * c * 7 * 7 * 256 + 256) + (256 * 10 + 10);
  EXPECT_EQ(parameter_count(*net), expected);
}

// Pre-activation residual networks (He et al. 2016) counted from their layers: a 3x3 stem, groups
// of blocks [GroupNorm, conv 3x3, GroupNorm, conv 3x3] with a 1x1 shortcut convolution where the
// width or the stride changes, a final GroupNorm and the classifier; every convolution has a bias,
// every GroupNorm a scale and a shift per channel.
TEST(Models, ResNet20AndWrnCountsFollowTheirLayers) {
  const auto conv = [](int64_t in, int64_t out, int64_t k) { return in * out * k * k + out; };
  const auto count = [&](const std::vector<int64_t>& widths, int64_t blocks) {
    int64_t n = conv(3, widths[0], 3), in = widths[0];
    for (size_t g = 1; g < widths.size(); ++g) {
      for (int64_t b = 0; b < blocks; ++b) {
        const int64_t out = widths[g];
        const bool shortcut = in != out || (g > 1 && b == 0);
        n += 2 * in + conv(in, out, 3) + 2 * out + conv(out, out, 3) + (shortcut ? conv(in, out, 1) : 0);
        in = out;
      }
    }
    return n + 2 * in + in * 10 + 10;
  };
  const int64_t resnet20 = count({16, 16, 32, 64}, 3);
  EXPECT_EQ(parameter_count(*build_model(spec("resnet20", "gn", 3, 32))), resnet20);
  const int64_t wrn = count({16, 160, 320, 640}, 4);
  EXPECT_EQ(parameter_count(*build_model(spec("wrn", "gn", 3, 32))), wrn);
  // The usual WRN-28-10 count, 36,479,194 (convolutions without biases), plus one bias per output
  // channel of its 25 convolutions (stem 16; per group 4 blocks of two, and one shortcut).
  EXPECT_EQ(wrn, 36479194 + 16 + 9 * 160 + 9 * 320 + 9 * 640);
}

// GroupNorm takes min(32, C/2) groups (the reference's rule), which must divide C: a width that
// breaks it is an error naming the channels when the network is built, not LibTorch's at the first
// forward pass. BatchNorm has no groups.
TEST(Models, GroupNormWidthsWhoseGroupsDoNotDivideAreErrors) {
  ModelSpec odd = spec("lenet", "gn", 1, 28);
  odd.channels = 5;  // 5 channels in 2 groups
  EXPECT_ERROR_CONTAINS(build_model(odd), "GroupNorm over 5 channels in min(32, 5/2) = 2 groups");
  ModelSpec wide = spec("lenet", "regn", 1, 28);
  wide.channels = 40;  // the second layer: 80 channels in 32 groups
  EXPECT_ERROR_CONTAINS(build_model(wide), "GroupNorm over 80 channels in min(32, 80/2) = 32 groups");
  for (const int64_t width : {1, 3, 6, 48, 64}) {
    ModelSpec fine = spec("lenet", "gn", 1, 28);
    fine.channels = width;
    auto net = build_model(fine);
    EXPECT_EQ(net->forward(at::zeros({2, 1, 28, 28})).size(1), 10) << width;
  }
  odd.norm = "bn";
  EXPECT_NO_THROW(build_model(odd));
}

TEST(Models, ReparameterizedNormsStartAtZeroAndActAsIdentityScale) {
  auto re = build_model(spec("lenet", "regn", 1, 28));
  auto plain = build_model(spec("lenet", "gn", 1, 28));
  for (const auto& item : re->named_parameters()) {
    if (item.key().find("norm") != std::string::npos) {
      EXPECT_EQ(item.value().abs().max().item<float>(), 0.0f) << item.key();
    }
  }
  // Same conv/linear weights => same outputs, since scale = 1 + 0.
  torch::NoGradGuard g;
  auto rp = re->named_parameters();
  for (auto& item : plain->named_parameters()) {
    if (item.key().find("norm") == std::string::npos) item.value().copy_(rp[item.key()]);
  }
  const auto x = torch::randn({2, 1, 28, 28});
  EXPECT_TRUE(torch::allclose(re->forward(x), plain->forward(x), 1e-5, 1e-6));
}

TEST(Models, ReparameterizedNormsScaleByOnePlusTheirWeight) {
  // Away from 0, in training and in eval mode: a regn/rebn layer with weight w and bias b computes
  // what the plain gn/bn layer computes with weight 1 + w and the same bias (and, for rebn, the
  // same running statistics after the same training-mode batches).
  for (const auto& [re_norm, plain_norm] : {std::pair<std::string, std::string>{"regn", "gn"}, {"rebn", "bn"}}) {
    torch::manual_seed(4);
    auto re = build_model(spec("lenet", re_norm, 1, 28));
    auto plain = build_model(spec("lenet", plain_norm, 1, 28));
    torch::NoGradGuard g;
    auto rp = re->named_parameters();
    int norm_weights = 0;
    for (auto& item : re->named_parameters()) {
      if (item.key().find("norm") != std::string::npos) item.value().uniform_(-0.1, 0.1);
    }
    for (auto& item : plain->named_parameters()) {
      const at::Tensor source = rp[item.key()];
      const bool scale = item.key().find("norm") != std::string::npos && item.key().find("weight") != std::string::npos;
      item.value().copy_(scale ? source + 1 : source);
      norm_weights += scale;
    }
    ASSERT_GE(norm_weights, 2) << re_norm;
    const auto x = torch::randn({4, 1, 28, 28});
    re->train();
    plain->train();
    EXPECT_TRUE(torch::allclose(re->forward(x), plain->forward(x), 1e-4, 1e-5)) << re_norm << ", training mode";
    re->eval();
    plain->eval();
    EXPECT_TRUE(torch::allclose(re->forward(x), plain->forward(x), 1e-4, 1e-5)) << re_norm << ", eval mode";
    // (the scale is not 1: the outputs differ from the network with the norm weights at 0)
    auto zero = build_model(spec("lenet", re_norm, 1, 28));
    auto zp = zero->named_parameters();
    for (auto& item : re->named_parameters()) {
      zp[item.key()].copy_(item.key().find("norm") != std::string::npos && item.key().find("weight") != std::string::npos
                               ? torch::zeros_like(item.value())
                               : item.value());
    }
    auto zb = zero->named_buffers();
    for (auto& item : re->named_buffers()) zb[item.key()].copy_(item.value());
    zero->eval();
    EXPECT_FALSE(torch::allclose(re->forward(x), zero->forward(x), 1e-4, 1e-5)) << re_norm;
  }
}

TEST(Models, BadSpecsAreClearErrors) {
  EXPECT_THROW(build_model(spec("vgg", "gn", 3, 32)), bitrobust::Error);
  EXPECT_THROW(build_model(spec("lenet", "ln", 3, 32)), bitrobust::Error);
  EXPECT_THROW(build_model(spec("simplenet", "gn", 3, 64)), bitrobust::Error);
  // Sizes that a damaged or edited model file may hold: errors before anything is allocated.
  ModelSpec huge_units = spec("mlp", "none", 1, 28);
  huge_units.units = {int64_t{1000000000000}};
  EXPECT_ERROR_CONTAINS(build_model(huge_units), "mlp hidden layer of 1000000000000 units");
  ModelSpec huge_input = spec("lenet", "gn", 1, 28);
  huge_input.height = huge_input.width = int64_t{1} << 62;
  EXPECT_ERROR_CONTAINS(build_model(huge_input), "model input shape must be at most 64x4096x4096");
  // Model files written when train ignored --width for mlp and --depth for others still load.
  ModelSpec mlp_width = spec("mlp", "none", 1, 28);
  mlp_width.channels = 64;
  mlp_width.depth = 16;
  EXPECT_NO_THROW(ModelSpec::from_json(mlp_width.to_json()));
  // Hidden units, which no command writes for other architectures, would be ignored there.
  ModelSpec lenet_units = spec("lenet", "gn", 1, 28);
  lenet_units.units = {5};
  EXPECT_ERROR_CONTAINS(build_model(lenet_units), "hidden units (units) are an mlp setting, and the model is a lenet");
  ModelSpec wide_mlp = spec("mlp", "none", 3, 4096);
  EXPECT_ERROR_CONTAINS(build_model(wide_mlp), "weight tensor of");  // 3*4096*4096 inputs x 1024 units
  // Convolutional networks within the width bounds that would need terabytes (found by a review:
  // wrn at width 4096 and widen 64 failed only when allocating 38 GB for its first block).
  ModelSpec huge_wrn = spec("wrn", "gn", 3, 32);
  huge_wrn.channels = 4096;
  huge_wrn.widen = 64;
  EXPECT_ERROR_CONTAINS(huge_wrn.validate(), "weight tensor of");
  huge_wrn.channels = 64;  // widths 1280, 2560, 5120: each tensor within 2^31, all of them not
  huge_wrn.widen = 20;
  EXPECT_ERROR_CONTAINS(huge_wrn.validate(), "weights (more than 2^30, 4 GiB as float32");
  ModelSpec wide_simplenet = spec("simplenet", "gn", 3, 32);
  wide_simplenet.channels = 1024;  // about 1.4e9 weights, the largest tensor 3e8
  EXPECT_ERROR_CONTAINS(wide_simplenet.validate(), "weights (more than 2^30");
  ModelSpec deep_resnet = spec("wrn", "gn", 3, 32);
  deep_resnet.depth = 994;
  EXPECT_ERROR_CONTAINS(deep_resnet.validate(), "depth 994");
  // The networks people train stay well inside: WRN-28-10 (36.5 M), SimpleNet at width 256.
  EXPECT_NO_THROW(spec("wrn", "gn", 3, 32).validate());
  ModelSpec simplenet256 = spec("simplenet", "gn", 3, 32);
  simplenet256.channels = 256;
  EXPECT_NO_THROW(simplenet256.validate());
  try {
    build_model(spec("vgg", "gn", 3, 32));
  } catch (const bitrobust::Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown model 'vgg'"), std::string::npos);
  }
}

TEST(Models, SpecJsonRoundTrip) {
  ModelSpec s = spec("mlp", "rebn", 1, 28, 10);
  s.units = {64, 32};
  const ModelSpec t = ModelSpec::from_json(s.to_json());
  EXPECT_EQ(t.to_json(), s.to_json());
  // Sizes must be integers in the description (the JSON library would read 4.7 as 4), not strings.
  nlohmann::json j = s.to_json();
  j["channels"] = 4.7;
  EXPECT_ERROR_CONTAINS(ModelSpec::from_json(j), "model description: 'channels' must be an integer, got 4.7");
  j = s.to_json();
  j["num_classes"] = "10";
  EXPECT_ERROR_CONTAINS(ModelSpec::from_json(j), "'num_classes' must be an integer, got \"10\"");
  j = s.to_json();
  j["units"] = {64, 32.5};
  EXPECT_ERROR_CONTAINS(ModelSpec::from_json(j), "'units' must be a list of integers, got [64,32.5]");
  j.erase("height");
  EXPECT_ERROR_CONTAINS(ModelSpec::from_json(j), "model description: no 'height'");
}

TEST(Models, ReferenceInitialisationIsHeNormalWithZeroBiases) {
  torch::manual_seed(3);
  auto net = build_model(spec("simplenet", "regn", 3, 32));
  bitrobust::models::initialize(*net, "reference");
  int checked = 0;
  for (const auto& item : net->named_parameters()) {
    const at::Tensor& t = item.value();
    const std::string& name = item.key();
    if (name.find("norm") != std::string::npos) {
      EXPECT_EQ(t.abs().max().item<float>(), 0.0f) << name;  // re-parameterized norms stay at 0
    } else if (t.dim() == 1) {
      EXPECT_EQ(t.abs().max().item<float>(), 0.0f) << name;  // convolution and linear biases
    } else {
      const double fan_in = static_cast<double>(t.numel() / t.size(0));
      const double expected = std::sqrt(2.0 / fan_in);
      // The sample std of n normals has relative standard error 1/sqrt(2n); 6 of those is a bound
      // that a correct initialisation never crosses with this seed.
      const double tolerance = 6.0 / std::sqrt(2.0 * static_cast<double>(t.numel()));
      EXPECT_NEAR(t.std().item<double>() / expected, 1.0, tolerance) << name;
      EXPECT_NEAR(t.mean().item<double>(), 0.0, 6.0 * expected / std::sqrt(static_cast<double>(t.numel()))) << name;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 14);  // 13 convolutions and the linear layer
}

TEST(Models, TorchInitialisationLeavesTheNetworkAsBuiltAndUnknownIsAnError) {
  torch::manual_seed(4);
  auto net = build_model(spec("lenet", "gn", 1, 28));
  std::vector<at::Tensor> before;
  for (const auto& p : net->parameters()) before.push_back(p.clone());
  bitrobust::models::initialize(*net, "torch");
  const auto after = net->parameters();
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(before[i].equal(after[i]));
  try {
    bitrobust::models::initialize(*net, "xavier");
    FAIL() << "no error";
  } catch (const bitrobust::Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown initialisation 'xavier' (known: torch, reference)"), std::string::npos)
        << e.what();
  }
}
