// Torch-free tests of the fused GroupNorm + ReLU CPU kernel against a straightforward
// double-precision transcription of the formula (NOTE [Fused GroupNorm + ReLU] in
// bitrobust/models/group_norm_relu_kernels.h), on shapes that exercise each loop of the kernel and
// on data that defeats naive float statistics.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "bitrobust/common/bfloat16.h"
#include "bitrobust/common/error.h"
#include "bitrobust/common/philox.h"
#include "bitrobust/models/group_norm_relu_kernels.h"
#include "bitrobust/models/max_pool_kernels.h"

namespace bitrobust::kernels {
namespace {

constexpr double kEps = 1e-5;
// |y - reference| <= kTol * (1 + |reference|): the op's promise against at::group_norm + relu.
constexpr double kTol = 1e-5;

std::string describe(const GroupNormShape& s) {
  return "[" + std::to_string(s.batch) + ", " + std::to_string(s.channels) + ", " +
         std::to_string(s.spatial) + "] groups " + std::to_string(s.groups);
}

/// Uniform floats in [lo, hi) from a seeded stream.
std::vector<float> uniform(int64_t n, float lo, float hi, uint64_t seed) {
  PhiloxStream rng(seed, 5);
  std::vector<float> v(n);
  for (float& value : v) value = lo + (hi - lo) * rng.uniform();
  return v;
}

/// The formula in double: two-pass mean and biased variance per group, then relu.
std::vector<double> reference(const std::vector<float>& x, const GroupNormShape& s,
                              const std::vector<float>& scale, const std::vector<float>& bias,
                              double eps) {
  const int64_t per_group = s.group_size();
  const int64_t channels_per_group = s.channels / s.groups;
  std::vector<double> y(x.size());
  for (int64_t ng = 0; ng < s.batch * s.groups; ++ng) {
    const float* xg = x.data() + ng * per_group;
    double mean = 0.0;
    for (int64_t i = 0; i < per_group; ++i) mean += xg[i];
    mean /= static_cast<double>(per_group);
    double var = 0.0;
    for (int64_t i = 0; i < per_group; ++i) var += (xg[i] - mean) * (xg[i] - mean);
    var /= static_cast<double>(per_group);
    const double rstd = 1.0 / std::sqrt(var + eps);
    for (int64_t i = 0; i < per_group; ++i) {
      const int64_t c = (ng % s.groups) * channels_per_group + i / s.spatial;
      const double v = (xg[i] - mean) * rstd * scale[c] + bias[c];
      y[ng * per_group + i] = std::max(0.0, v);
    }
  }
  return y;
}

struct Case {
  GroupNormShape shape;
  std::vector<float> x, scale, bias;
};

Case random_case(GroupNormShape shape, uint64_t seed, float offset = 0.0f, float spread = 2.0f) {
  Case c{shape, uniform(shape.numel(), offset - spread, offset + spread, seed),
         uniform(shape.channels, -1.5f, 1.5f, seed + 1), uniform(shape.channels, -1.0f, 1.0f, seed + 2)};
  return c;
}

std::vector<float> run(const Case& c, double eps = kEps) {
  std::vector<float> y(c.x.size(), -7.0f);
  group_norm_relu_cpu(c.x.data(), c.shape, c.scale.data(), c.bias.data(), nullptr, eps, y.data());
  return y;
}

/// Largest |y - ref| / (1 + |ref|); expects every element within kTol.
double expect_close_to_reference(const Case& c, const std::string& what) {
  const std::vector<float> y = run(c);
  const std::vector<double> ref = reference(c.x, c.shape, c.scale, c.bias, kEps);
  double worst = 0.0;
  for (size_t i = 0; i < y.size(); ++i) {
    const double err = std::fabs(y[i] - ref[i]) / (1.0 + std::fabs(ref[i]));
    worst = std::max(worst, err);
    if (err > kTol) {
      ADD_FAILURE() << what << " " << describe(c.shape) << ": element " << i << " is " << y[i]
                    << ", reference " << ref[i];
      break;
    }
  }
  return worst;
}

/// Runs f() with OpenMP on one thread, then on two, and puts the thread count back.
template <typename F>
void on_one_and_two_threads(F f) {
  const int saved = omp_get_max_threads();
  for (const int n : {1, 2}) {
    omp_set_num_threads(n);
    f();
  }
  omp_set_num_threads(saved);
}

/// The message of the bitrobust::Error that f() throws, or "" when it throws none.
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(GroupNormReluCpu, MatchesDoubleReferenceOnShapesOfEveryKind) {
  const std::vector<GroupNormShape> shapes = {
      {2, 4, 5, 2},     // small
      {3, 6, 1, 3},     // S = 1: the [N, C] input of a linear layer
      {2, 4, 3, 4},     // one channel per group
      {1, 8, 7, 1},     // one group
      {2, 64, 9, 32},   // SimpleNet's group count
      {5, 256, 1, 32},  // LeNet's fc1 GroupNorm
      {2, 32, 784, 16}, // LeNet's conv1 output
      {4, 64, 1024, 32} // SimpleNet's conv1 output: above the parallel threshold
  };
  uint64_t seed = 10;
  for (const auto& shape : shapes) {
    const double worst = expect_close_to_reference(random_case(shape, seed++), "random");
    EXPECT_LT(worst, 2e-6) << describe(shape);  // a few float roundings, far inside kTol
  }
}

TEST(GroupNormReluCpu, ConstantGroupGivesReluOfBiasExactly) {
  for (const int64_t spatial : {int64_t{1}, int64_t{6}}) {
    Case c = random_case({2, 8, spatial, 4}, 3);  // 2 channels per group
    const int64_t per_group = c.shape.group_size();
    // Group (n=0, g=1) and group (n=1, g=3) constant: variance 0, every deviation exactly 0.
    std::fill(c.x.begin() + 1 * per_group, c.x.begin() + 2 * per_group, 0.37f);
    std::fill(c.x.begin() + 7 * per_group, c.x.begin() + 8 * per_group, -1234.5f);
    c.bias[2] = 0.25f;
    c.bias[3] = -0.5f;
    c.bias[6] = 0.75f;
    c.bias[7] = 0.0f;
    const std::vector<float> y = run(c);
    for (int64_t i = 0; i < per_group; ++i) {
      const int64_t local_channel = i / spatial;
      EXPECT_EQ(y[1 * per_group + i], std::max(0.0f, c.bias[2 + local_channel])) << i;
      EXPECT_EQ(y[7 * per_group + i], std::max(0.0f, c.bias[6 + local_channel])) << i;
    }
    expect_close_to_reference(c, "constant groups");
  }
}

TEST(GroupNormReluCpu, LargeMeanOffsetKeepsTheNoise) {
  // x = offset + noise: the statistics must not round the noise away. The naive float evaluation
  // x * (rstd*scale) + (bias - mean*rstd*scale) that eager GroupNorm uses is shown to fail here,
  // so this case tests something.
  struct Offset { float offset, spread; };
  for (const Offset o : {Offset{1000.0f, 0.01f}, Offset{1e4f, 1.0f}, Offset{-3e5f, 20.0f}}) {
    const Case c = random_case({3, 16, 49, 8}, 21, o.offset, o.spread);
    expect_close_to_reference(c, "offset " + std::to_string(o.offset));

    const std::vector<double> ref = reference(c.x, c.shape, c.scale, c.bias, kEps);
    double naive_worst = 0.0;
    const int64_t per_group = c.shape.group_size();
    for (int64_t ng = 0; ng < c.shape.batch * c.shape.groups; ++ng) {
      float sum = 0.0f, sum_sq = 0.0f;
      for (int64_t i = 0; i < per_group; ++i) {
        sum += c.x[ng * per_group + i];
        sum_sq += c.x[ng * per_group + i] * c.x[ng * per_group + i];
      }
      const float mean = sum / per_group;
      const float var = std::max(0.0f, sum_sq / per_group - mean * mean);
      const float rstd = 1.0f / std::sqrt(var + static_cast<float>(kEps));
      for (int64_t i = 0; i < per_group; ++i) {
        const int64_t ch = (ng % c.shape.groups) * 2 + i / c.shape.spatial;
        const float a = rstd * c.scale[ch];
        const float v = std::max(0.0f, c.x[ng * per_group + i] * a + (c.bias[ch] - mean * a));
        naive_worst = std::max(naive_worst, std::fabs(v - ref[ng * per_group + i]));
      }
    }
    EXPECT_GT(naive_worst, 1e-3) << "offset " << o.offset << ": the case is not hard";
  }
}

TEST(GroupNormReluCpu, NanOrInfinityMakesItsGroupNanAndLeavesOthersAlone) {
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    Case c = random_case({2, 6, 5, 3}, 8);
    const int64_t per_group = c.shape.group_size();
    const std::vector<float> clean = run(c);
    c.x[2 * per_group + 3] = bad;  // group (n=0, g=2)
    const std::vector<float> y = run(c);
    for (int64_t i = 0; i < static_cast<int64_t>(y.size()); ++i) {
      if (i / per_group == 2) {
        EXPECT_TRUE(std::isnan(y[i])) << bad << " element " << i;
      } else {
        EXPECT_EQ(y[i], clean[i]) << bad << " element " << i;
      }
    }
  }
}

TEST(GroupNormReluCpu, ResultDoesNotDependOnThreadCount) {
  const Case c = random_case({8, 64, 256, 32}, 31);  // 131072 elements: the parallel path
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const std::vector<float> one = run(c);
  omp_set_num_threads(2);
  const std::vector<float> two = run(c);
  omp_set_num_threads(threads);
  EXPECT_EQ(one, two);
}

/// group_norm_relu_max_pool2x2_cpu on c (x of [batch, channels, height, width]), with and without
/// an input bias, against group_norm_relu_cpu then max_pool2x2_cpu: the same bits.
void expect_pooled_equals_norm_then_pool(const Case& c, int64_t height, int64_t width) {
  const int64_t planes = c.shape.batch * c.shape.channels;
  const std::vector<float> input_bias = uniform(c.shape.channels, -2.0f, 2.0f, 99);
  for (const float* bias_in : {static_cast<const float*>(nullptr), input_bias.data()}) {
    std::vector<float> full(c.x.size()), expected(static_cast<size_t>(planes * (height / 2) * (width / 2)));
    group_norm_relu_cpu(c.x.data(), c.shape, c.scale.data(), c.bias.data(), bias_in, kEps, full.data());
    max_pool2x2_cpu(full.data(), planes, height, width, expected.data());
    std::vector<float> pooled(expected.size(), -7.0f);
    group_norm_relu_max_pool2x2_cpu(c.x.data(), c.shape, height, width, c.scale.data(), c.bias.data(), bias_in, kEps,
                                    pooled.data());
    EXPECT_EQ(std::memcmp(pooled.data(), expected.data(), expected.size() * sizeof(float)), 0)
        << describe(c.shape) << " as " << height << " x " << width << (bias_in ? ", input bias" : "");
  }
}

TEST(GroupNormReluCpu, PooledEqualsNormalizingThenPoolingBitForBit) {
  expect_pooled_equals_norm_then_pool(random_case({4, 32, 28 * 28, 16}, 41), 28, 28);  // LeNet's first
  expect_pooled_equals_norm_then_pool(random_case({3, 64, 14 * 14, 32}, 42), 14, 14);
  expect_pooled_equals_norm_then_pool(random_case({2, 8, 7 * 9, 4}, 43), 7, 9);        // odd: last row, column out
  expect_pooled_equals_norm_then_pool(random_case({1, 2, 2 * 3, 1}, 44), 2, 3);
  expect_pooled_equals_norm_then_pool(random_case({5, 4, 4, 2}, 45, 1000.0f, 0.01f), 2, 2);
  // NaN in one group: its outputs NaN, as pooling NaN gives.
  Case nan_case = random_case({2, 4, 16, 2}, 46);
  nan_case.x[3] = std::numeric_limits<float>::quiet_NaN();
  expect_pooled_equals_norm_then_pool(nan_case, 4, 4);
  // The parallel path (131,072 elements), with and without an input bias, on one and two threads:
  // every thread's buffers, checked against the reference each time.
  const Case big = random_case({8, 64, 256, 32}, 47);
  on_one_and_two_threads([&] { expect_pooled_equals_norm_then_pool(big, 16, 16); });
}

TEST(GroupNormReluCpu, PooledRejectsPlanesThatDoNotFitTheShape) {
  const Case c = random_case({1, 2, 12, 1}, 48);
  std::vector<float> y(12);
  for (const auto& [height, width] : std::vector<std::pair<int64_t, int64_t>>{{3, 3}, {1, 12}, {12, 1}}) {
    const std::string message = error_of([&] {
      group_norm_relu_max_pool2x2_cpu(c.x.data(), c.shape, height, width, c.scale.data(), c.bias.data(), nullptr,
                                      kEps, y.data());
    });
    EXPECT_NE(message.find("must be at least 2 x 2 and hold the 12 values a channel has"), std::string::npos)
        << height << " x " << width << ": '" << message << "'";
  }
}

TEST(GroupNormReluCpu, EmptyInputWritesNothing) {
  Case c = random_case({0, 4, 3, 2}, 1);
  std::vector<float> y(4, -7.0f);
  group_norm_relu_cpu(nullptr, c.shape, c.scale.data(), c.bias.data(), nullptr, kEps, y.data());
  EXPECT_EQ(y, std::vector<float>(4, -7.0f));
  group_norm_relu_cpu(nullptr, {2, 4, 0, 2}, c.scale.data(), c.bias.data(), nullptr, kEps, y.data());
  EXPECT_EQ(y, std::vector<float>(4, -7.0f));
}

std::vector<uint16_t> narrowed(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = float_to_bf16(v[i]);
  return out;
}

std::vector<float> widened(const std::vector<uint16_t>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_float(v[i]);
  return out;
}

/// The bf16 kernels on c's x rounded to bf16, against the float kernels on the same values widened,
/// their outputs rounded: the same bits, unpooled and pooled, with and without an input bias.
void expect_bf16_is_float_of_widened_then_rounded(const Case& c, int64_t height, int64_t width) {
  const std::vector<uint16_t> x = narrowed(c.x);
  const std::vector<float> x_wide = widened(x);
  const std::vector<float> input_bias = uniform(c.shape.channels, -2.0f, 2.0f, 98);
  const int64_t pooled_size = c.shape.batch * c.shape.channels * (height / 2) * (width / 2);
  for (const float* bias_in : {static_cast<const float*>(nullptr), input_bias.data()}) {
    const std::string what = describe(c.shape) + (bias_in ? ", input bias" : "");
    std::vector<float> full(x.size());
    group_norm_relu_cpu(x_wide.data(), c.shape, c.scale.data(), c.bias.data(), bias_in, kEps, full.data());
    std::vector<uint16_t> y(x.size(), 0x1234);
    group_norm_relu_bf16_cpu(x.data(), c.shape, c.scale.data(), c.bias.data(), bias_in, kEps, y.data());
    EXPECT_EQ(y, narrowed(full)) << what;
    if (height == 0) continue;
    std::vector<float> pooled(static_cast<size_t>(pooled_size));
    group_norm_relu_max_pool2x2_cpu(x_wide.data(), c.shape, height, width, c.scale.data(), c.bias.data(), bias_in,
                                    kEps, pooled.data());
    std::vector<uint16_t> pooled_bf16(pooled.size(), 0x1234);
    group_norm_relu_max_pool2x2_bf16_cpu(x.data(), c.shape, height, width, c.scale.data(), c.bias.data(), bias_in,
                                         kEps, pooled_bf16.data());
    EXPECT_EQ(pooled_bf16, narrowed(pooled)) << what << " pooled";
    // Rounding keeps order, so pooling the rounded outputs gives the same bits.
    std::vector<uint16_t> pooled_after(pooled.size());
    max_pool2x2_bf16_cpu(y.data(), c.shape.batch * c.shape.channels, height, width, pooled_after.data());
    EXPECT_EQ(pooled_bf16, pooled_after) << what << " pooled after rounding";
  }
}

TEST(GroupNormReluCpu, Bf16IsTheFloatKernelOnWidenedValuesRoundedOnce) {
  expect_bf16_is_float_of_widened_then_rounded(random_case({4, 32, 28 * 28, 16}, 51), 28, 28);
  expect_bf16_is_float_of_widened_then_rounded(random_case({2, 8, 7 * 9, 4}, 52), 7, 9);
  expect_bf16_is_float_of_widened_then_rounded(random_case({5, 4, 4, 2}, 53, 1000.0f, 8.0f), 2, 2);
  expect_bf16_is_float_of_widened_then_rounded(random_case({6, 256, 1, 128}, 54), 0, 0);  // [N, C]: linear layers
  Case nan_case = random_case({2, 4, 16, 2}, 55);
  nan_case.x[5] = std::numeric_limits<float>::quiet_NaN();
  expect_bf16_is_float_of_widened_then_rounded(nan_case, 4, 4);
  // The parallel path on one and two threads.
  const Case big = random_case({8, 64, 256, 32}, 56);
  on_one_and_two_threads([&] { expect_bf16_is_float_of_widened_then_rounded(big, 16, 16); });
}

TEST(GroupNormReluCpu, Bf16FormsRejectWhatTheFloatOnesReject) {
  const std::vector<uint16_t> x(64, 0x3F80);
  const std::vector<float> p(8, 1.0f);
  std::vector<uint16_t> y(64);
  EXPECT_NE(error_of([&] { group_norm_relu_bf16_cpu(x.data(), {2, 6, 4, 4}, p.data(), p.data(), nullptr, kEps, y.data()); })
                .find("group_norm_relu_bf16_cpu: 6 channels do not split into 4 groups"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              group_norm_relu_max_pool2x2_bf16_cpu(x.data(), {1, 2, 12, 1}, 3, 3, p.data(), p.data(), nullptr, kEps,
                                                   y.data());
            }).find("group_norm_relu_max_pool2x2_bf16_cpu: planes of 3 x 3"),
            std::string::npos);
}

// ---- Channels last (NOTE [Channels-last GroupNorm]) ----

/// [N, C, S] (channels first) to [N, S, C] (channels last), or back with `back`.
template <typename T>
std::vector<T> transposed(const std::vector<T>& v, int64_t batch, int64_t channels, int64_t spatial, bool back = false) {
  std::vector<T> out(v.size());
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t s = 0; s < spatial; ++s) {
        const int64_t first = (n * channels + c) * spatial + s, last = (n * spatial + s) * channels + c;
        if (back) {
          out[first] = v[last];
        } else {
          out[last] = v[first];
        }
      }
    }
  }
  return out;
}

GroupNormShape channels_last(GroupNormShape s) {
  s.channels_last = true;
  return s;
}

/// The channels-last kernels on c's x laid out channels last, against the channels-first kernels
/// on x: every output within 1e-6 of it relative (the statistics are summed in another order, and
/// the float mean pair or rstd may round the other way), NaN where it is NaN; most outputs are its
/// bits. Unpooled and pooled (height > 0), with and without an input bias. Returns the share of
/// outputs equal bit for bit.
double expect_channels_last_is_channels_first(const Case& c, int64_t height, int64_t width) {
  const GroupNormShape& s = c.shape;
  const std::vector<float> x_last = transposed(c.x, s.batch, s.channels, s.spatial);
  const std::vector<float> input_bias = uniform(s.channels, -2.0f, 2.0f, 97);
  int64_t equal = 0, total = 0;
  const auto compare = [&](const std::vector<float>& first, const std::vector<float>& last_back, const std::string& what) {
    for (size_t i = 0; i < first.size(); ++i) {
      const bool both_nan = std::isnan(first[i]) && std::isnan(last_back[i]);
      if (!both_nan && !(std::fabs(first[i] - last_back[i]) <= 1e-6 * (1.0 + std::fabs(first[i])))) {
        ADD_FAILURE() << what << ": element " << i << " is " << last_back[i] << " channels last, " << first[i]
                      << " channels first";
        return;
      }
      equal += std::memcmp(&first[i], &last_back[i], sizeof(float)) == 0;
      ++total;
    }
  };
  for (const float* bias_in : {static_cast<const float*>(nullptr), input_bias.data()}) {
    const std::string what = describe(s) + (bias_in ? ", input bias" : "");
    std::vector<float> first(c.x.size()), last(c.x.size(), -7.0f);
    group_norm_relu_cpu(c.x.data(), s, c.scale.data(), c.bias.data(), bias_in, kEps, first.data());
    group_norm_relu_cpu(x_last.data(), channels_last(s), c.scale.data(), c.bias.data(), bias_in, kEps, last.data());
    compare(first, transposed(last, s.batch, s.channels, s.spatial, true), what);
    if (height == 0) continue;
    const int64_t pooled_spatial = (height / 2) * (width / 2);
    std::vector<float> pooled_first(static_cast<size_t>(s.batch * s.channels * pooled_spatial));
    std::vector<float> pooled_last(pooled_first.size(), -7.0f), last_then_pooled(pooled_first.size(), -7.0f);
    group_norm_relu_max_pool2x2_cpu(c.x.data(), s, height, width, c.scale.data(), c.bias.data(), bias_in, kEps,
                                    pooled_first.data());
    group_norm_relu_max_pool2x2_cpu(x_last.data(), channels_last(s), height, width, c.scale.data(), c.bias.data(),
                                    bias_in, kEps, pooled_last.data());
    compare(pooled_first, transposed(pooled_last, s.batch, s.channels, pooled_spatial, true), what + " pooled");
    // Pooled in the same pass, or normalized and then pooled channels last: the same bits.
    max_pool2x2_channels_last_cpu(last.data(), s.batch, s.channels, height, width, last_then_pooled.data());
    EXPECT_EQ(std::memcmp(pooled_last.data(), last_then_pooled.data(), pooled_last.size() * sizeof(float)), 0)
        << what << " pooled in one pass";
  }
  return total > 0 ? static_cast<double>(equal) / static_cast<double>(total) : 1.0;
}

TEST(GroupNormReluCpu, ChannelsLastIsTheChannelsFirstKernelOnTransposedInput) {
  EXPECT_GT(expect_channels_last_is_channels_first(random_case({4, 64, 8 * 8, 32}, 61), 8, 8), 0.99);  // SimpleNet's
  EXPECT_GT(expect_channels_last_is_channels_first(random_case({3, 32, 16 * 16, 16}, 62), 16, 16), 0.99);
  expect_channels_last_is_channels_first(random_case({2, 8, 7 * 9, 4}, 63), 7, 9);  // odd: last row, column out
  expect_channels_last_is_channels_first(random_case({2, 4, 3 * 3, 4}, 64), 3, 3);  // one channel per group
  expect_channels_last_is_channels_first(random_case({2, 6, 5 * 2, 1}, 65), 5, 2);  // one group
  expect_channels_last_is_channels_first(random_case({3, 8, 4, 2}, 66, 1000.0f, 0.01f), 2, 2);  // large mean
  expect_channels_last_is_channels_first(random_case({2, 2048, 2 * 2, 32}, 67), 2, 2);  // a run of 2 pixels
  expect_channels_last_is_channels_first(random_case({2, 4352, 2 * 2, 32}, 75), 2, 2);  // more channels than a run
  expect_channels_last_is_channels_first(random_case({1, 4, 300 * 30, 2}, 68), 300, 30);  // several runs a sample
  Case nan_case = random_case({2, 8, 16, 4}, 69);
  nan_case.x[17] = std::numeric_limits<float>::quiet_NaN();  // sample 0, channel 1: group 0 of sample 0
  expect_channels_last_is_channels_first(nan_case, 4, 4);
  // The parallel path, on one and two threads.
  const Case big = random_case({8, 64, 256, 32}, 70);
  on_one_and_two_threads([&] { expect_channels_last_is_channels_first(big, 16, 16); });
}

TEST(GroupNormReluCpu, ChannelsLastResultDoesNotDependOnThreadCount) {
  const Case c = random_case({8, 64, 256, 32}, 71);
  const std::vector<float> x = transposed(c.x, 8, 64, 256);
  std::vector<std::vector<float>> outputs;
  on_one_and_two_threads([&] {
    std::vector<float> y(x.size()), pooled(x.size() / 4);
    group_norm_relu_cpu(x.data(), channels_last(c.shape), c.scale.data(), c.bias.data(), nullptr, kEps, y.data());
    group_norm_relu_max_pool2x2_cpu(x.data(), channels_last(c.shape), 16, 16, c.scale.data(), c.bias.data(), nullptr,
                                    kEps, pooled.data());
    outputs.push_back(y);
    outputs.push_back(pooled);
  });
  EXPECT_EQ(outputs[0], outputs[2]);
  EXPECT_EQ(outputs[1], outputs[3]);
}

TEST(GroupNormReluCpu, ChannelsLastBf16IsTheFloatKernelOnWidenedValuesRoundedOnce) {
  for (const auto& [c, height] : std::vector<std::pair<Case, int64_t>>{{random_case({4, 32, 8 * 8, 16}, 72), 8},
                                                                      {random_case({2, 8, 6 * 6, 4}, 73), 6},
                                                                      {random_case({8, 64, 256, 32}, 74), 16}}) {
    const GroupNormShape s = channels_last(c.shape);
    const std::vector<uint16_t> x = narrowed(transposed(c.x, s.batch, s.channels, s.spatial));
    const std::vector<float> x_wide = widened(x);
    const std::vector<float> input_bias = uniform(s.channels, -2.0f, 2.0f, 96);
    for (const float* bias_in : {static_cast<const float*>(nullptr), input_bias.data()}) {
      const std::string what = describe(s) + (bias_in ? ", input bias" : "");
      std::vector<float> full(x.size());
      group_norm_relu_cpu(x_wide.data(), s, c.scale.data(), c.bias.data(), bias_in, kEps, full.data());
      std::vector<uint16_t> y(x.size(), 0x1234);
      group_norm_relu_bf16_cpu(x.data(), s, c.scale.data(), c.bias.data(), bias_in, kEps, y.data());
      EXPECT_EQ(y, narrowed(full)) << what;
      std::vector<float> pooled(x.size() / 4);
      group_norm_relu_max_pool2x2_cpu(x_wide.data(), s, height, height, c.scale.data(), c.bias.data(), bias_in, kEps,
                                      pooled.data());
      std::vector<uint16_t> pooled_bf16(pooled.size(), 0x1234), pooled_after(pooled.size(), 0x1234);
      group_norm_relu_max_pool2x2_bf16_cpu(x.data(), s, height, height, c.scale.data(), c.bias.data(), bias_in, kEps,
                                           pooled_bf16.data());
      EXPECT_EQ(pooled_bf16, narrowed(pooled)) << what << " pooled";
      max_pool2x2_channels_last_bf16_cpu(y.data(), s.batch, s.channels, height, height, pooled_after.data());
      EXPECT_EQ(pooled_bf16, pooled_after) << what << " pooled after rounding";
    }
  }
}

TEST(GroupNormReluCpu, RejectsInvalidSizes) {
  const std::vector<float> x(64, 1.0f), p(8, 1.0f);
  std::vector<float> y(64);
  auto message = [&](GroupNormShape s, double eps) {
    return error_of([&] { group_norm_relu_cpu(x.data(), s, p.data(), p.data(), nullptr, eps, y.data()); });
  };
  EXPECT_NE(message({2, 6, 4, 4}, kEps).find("group_norm_relu_cpu: 6 channels do not split into 4 groups"),
            std::string::npos);
  EXPECT_NE(message({2, 8, 4, 0}, kEps).find("do not split into 0 groups"), std::string::npos);
  EXPECT_NE(message({2, 0, 4, 1}, kEps).find("channels must be >= 1"), std::string::npos);
  EXPECT_NE(message({-1, 8, 4, 2}, kEps).find("sizes must be >= 0"), std::string::npos);
  EXPECT_NE(message({2, 8, 4, 2}, -1.0).find("eps must be finite and >= 0"), std::string::npos);
}

}  // namespace
}  // namespace bitrobust::kernels
