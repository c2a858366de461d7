// Torch-free tests of the 2x2 max pooling CPU kernel against the formula of NOTE [2x2 max pooling]
// (bitrobust/models/max_pool_kernels.h), including its rules for NaN and signed zeros.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "bitrobust/common/bfloat16.h"
#include "bitrobust/common/error.h"
#include "bitrobust/common/philox.h"
#include "bitrobust/models/max_pool_kernels.h"

namespace bitrobust::kernels {
namespace {

/// Seeded floats in [-4, 4), with about 1 in 64 replaced by NaN, +-inf, +0 or -0.
std::vector<float> mixed(int64_t n, uint64_t seed) {
  PhiloxStream rng(seed, 9);
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), 0.0f, -0.0f};
  std::vector<float> v(n);
  for (float& value : v) {
    value = -4.0f + 8.0f * rng.uniform();
    if (rng.below(64) == 0) value = specials[rng.below(5)];
  }
  return v;
}

/// The formula, one output at a time: the window's elements in row-major order, each replacing the
/// maximum when greater or NaN; and the position in the window of the one taken, which ATen's argmax
/// index names (the first of the greatest, or the last NaN).
struct Pooled {
  std::vector<float> y;
  std::vector<uint8_t> positions;
};
Pooled reference(const std::vector<float>& x, int64_t planes, int64_t h, int64_t w) {
  Pooled out;
  for (int64_t p = 0; p < planes; ++p) {
    for (int64_t i = 0; i < h / 2; ++i) {
      for (int64_t j = 0; j < w / 2; ++j) {
        float m = -std::numeric_limits<float>::infinity();
        uint8_t where = 0;
        for (uint8_t k = 0; k < 4; ++k) {
          const float v = x[(p * h + 2 * i + k / 2) * w + 2 * j + k % 2];
          if (v > m || std::isnan(v)) {
            m = v;
            where = k;
          }
        }
        out.y.push_back(m);
        out.positions.push_back(where);
      }
    }
  }
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<float> pool(const std::vector<float>& x, int64_t planes, int64_t h, int64_t w) {
  std::vector<float> y(static_cast<size_t>(planes * (h / 2) * (w / 2)), 123.0f);
  max_pool2x2_cpu(x.data(), planes, h, w, y.data());
  return y;
}

TEST(MaxPool2x2Kernel, EqualsTheFormulaBitForBitOnEvenOddAndTinyShapes) {
  struct Shape {
    int64_t planes, h, w;
  };
  // Odd heights and widths drop their last row or column; widths past a vector's lanes and short
  // of them; planes enough to fork (>= 2^16 elements) and not.
  for (const Shape s : {Shape{3, 4, 4}, Shape{5, 7, 9}, Shape{2, 2, 2}, Shape{1, 3, 2}, Shape{4, 28, 28},
                        Shape{64, 14, 14}, Shape{100, 29, 31}, Shape{7, 2, 67}}) {
    const std::string name = std::to_string(s.planes) + "x" + std::to_string(s.h) + "x" + std::to_string(s.w);
    const std::vector<float> x = mixed(s.planes * s.h * s.w, static_cast<uint64_t>(s.planes * 1000 + s.h * 10 + s.w));
    EXPECT_TRUE(same_bits(pool(x, s.planes, s.h, s.w), reference(x, s.planes, s.h, s.w).y)) << name;
  }
}

TEST(MaxPool2x2Kernel, PositionsNameAtensArgmaxAndTheOutputsAreUnchanged) {
  for (const auto& [planes, h, w] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {3, 4, 4}, {5, 7, 9}, {100, 29, 31}, {64, 14, 14}, {7, 2, 67}}) {
    const std::string name = std::to_string(planes) + "x" + std::to_string(h) + "x" + std::to_string(w);
    std::vector<float> x = mixed(planes * h * w, static_cast<uint64_t>(planes + h + w));
    // Ties between finite values too, not only between zeros.
    for (size_t e = 0; e < x.size(); e += 7) x[e] = std::round(x[e]);
    std::vector<float> y(static_cast<size_t>(planes * (h / 2) * (w / 2)));
    std::vector<uint8_t> positions(y.size(), 9);
    max_pool2x2_with_positions_cpu(x.data(), planes, h, w, y.data(), positions.data());
    EXPECT_TRUE(same_bits(y, pool(x, planes, h, w))) << name;
    EXPECT_EQ(positions, reference(x, planes, h, w).positions) << name;
  }
}

TEST(MaxPool2x2Kernel, BackwardPutsZeroPlusTheGradientAtEachPositionAndZerosElsewhere) {
  for (const auto& [planes, h, w] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {3, 4, 4}, {5, 7, 9}, {100, 29, 31}, {64, 14, 14}, {2, 3, 1}}) {
    const std::string name = std::to_string(planes) + "x" + std::to_string(h) + "x" + std::to_string(w);
    const int64_t outputs = planes * (h / 2) * (w / 2);
    const std::vector<float> grad_y = mixed(outputs, static_cast<uint64_t>(7 * planes + h));  // NaN, -0 among them
    PhiloxStream rng(static_cast<uint64_t>(h * w), 3);
    std::vector<uint8_t> positions(static_cast<size_t>(outputs));
    for (uint8_t& where : positions) where = static_cast<uint8_t>(rng.below(4));
    std::vector<float> grad_x(static_cast<size_t>(planes * h * w), 123.0f);
    max_pool2x2_backward_cpu(grad_y.data(), positions.data(), planes, h, w, grad_x.data());
    std::vector<float> expected(grad_x.size(), 0.0f);
    for (int64_t k = 0; k < outputs; ++k) {
      const int64_t p = k / ((h / 2) * (w / 2)), i = k / (w / 2) % (h / 2), j = k % (w / 2);
      expected[(p * h + 2 * i + positions[k] / 2) * w + 2 * j + positions[k] % 2] = 0.0f + grad_y[k];
    }
    EXPECT_TRUE(same_bits(grad_x, expected)) << name;
    for (size_t e = 0; e < grad_x.size(); ++e) {
      if (grad_x[e] == 0.0f) ASSERT_FALSE(std::signbit(grad_x[e])) << name << ": -0 at " << e;
    }
  }
}

TEST(MaxPool2x2Kernel, NanPropagatesAndTheFirstOfEqualZerosWins) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  // Five planes of 2 x 2: NaN first, NaN last, -0 before +0, +0 before -0, all -inf.
  const std::vector<float> x = {nan, 1, 2, 3, 1, 2, 3, nan, -0.0f, 0.0f, -1, -2, 0.0f, -0.0f, -1, -2, -inf, -inf, -inf, -inf};
  const std::vector<float> y = pool(x, 5, 2, 2);
  ASSERT_EQ(y.size(), 5u);
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_TRUE(std::isnan(y[1]));
  EXPECT_EQ(y[2], 0.0f);
  EXPECT_TRUE(std::signbit(y[2])) << "-0 came first";
  EXPECT_FALSE(std::signbit(y[3])) << "+0 came first";
  EXPECT_EQ(y[4], -inf);
}

TEST(MaxPool2x2Kernel, ResultsDoNotDependOnThreads) {
  const int64_t planes = 300, h = 16, w = 18;  // 86,400 elements: forks
  const int64_t outputs = planes * (h / 2) * (w / 2);
  const std::vector<float> x = mixed(planes * h * w, 77), grad_y = mixed(outputs, 78);
  struct Results {
    std::vector<float> y, y_positioned, grad_x;
    std::vector<uint8_t> positions;
  };
  const auto run = [&](int threads) {
    omp_set_num_threads(threads);
    Results r;
    r.y = pool(x, planes, h, w);
    r.y_positioned.resize(static_cast<size_t>(outputs));
    r.positions.resize(static_cast<size_t>(outputs));
    max_pool2x2_with_positions_cpu(x.data(), planes, h, w, r.y_positioned.data(), r.positions.data());
    r.grad_x.resize(x.size());
    max_pool2x2_backward_cpu(grad_y.data(), r.positions.data(), planes, h, w, r.grad_x.data());
    return r;
  };
  const int saved = omp_get_max_threads();
  const Results one = run(1), three = run(3);
  omp_set_num_threads(saved);
  EXPECT_TRUE(same_bits(one.y, three.y));
  EXPECT_TRUE(same_bits(one.y_positioned, three.y_positioned));
  EXPECT_EQ(one.positions, three.positions);
  EXPECT_TRUE(same_bits(one.grad_x, three.grad_x));
}

TEST(MaxPool2x2Kernel, Bf16KeepsTheElementTheFloatRuleKeeps) {
  // bf16 values with NaN of both signs and payloads, infinities and signed zeros among them; each
  // output must be the bits of the window element the float rule picks from the widened values.
  for (const auto& [planes, h, w] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {3, 4, 4}, {2, 5, 7}, {1, 2, 3}, {300, 16, 18}}) {
    const std::vector<float> values = mixed(planes * h * w, 81 + planes);
    std::vector<uint16_t> x(values.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] = float_to_bf16(values[i]);
    for (size_t i = 0; i < x.size(); i += 97) {
      if (std::isnan(values[i])) x[i] = static_cast<uint16_t>(0xFF81 + i % 8);  // negative NaN, other payloads
    }
    std::vector<float> wide(x.size());
    for (size_t i = 0; i < x.size(); ++i) wide[i] = bf16_to_float(x[i]);
    const Pooled expected = reference(wide, planes, h, w);
    std::vector<uint16_t> y(expected.y.size(), 0x1234);
    const int saved = omp_get_max_threads();
    for (const int threads : {1, 3}) {
      omp_set_num_threads(threads);
      max_pool2x2_bf16_cpu(x.data(), planes, h, w, y.data());
      for (size_t k = 0; k < y.size(); ++k) {
        const int64_t p = static_cast<int64_t>(k) / ((h / 2) * (w / 2));
        const int64_t i = (static_cast<int64_t>(k) / (w / 2)) % (h / 2), j = static_cast<int64_t>(k) % (w / 2);
        const uint8_t where = expected.positions[k];
        const uint16_t taken = x[static_cast<size_t>((p * h + 2 * i + where / 2) * w + 2 * j + where % 2)];
        ASSERT_EQ(y[k], taken) << planes << " x " << h << " x " << w << ", output " << k << ", " << threads
                               << " threads";
      }
    }
    omp_set_num_threads(saved);
  }
}

/// [N, C, H, W] laid out as [N, H, W, C] (channels last), or back with `back`.
template <typename T>
std::vector<T> channels_last(const std::vector<T>& v, int64_t batch, int64_t channels, int64_t h, int64_t w,
                             bool back = false) {
  std::vector<T> out(v.size());
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t p = 0; p < h * w; ++p) {
        const int64_t first = (n * channels + c) * h * w + p, last = (n * h * w + p) * channels + c;
        out[back ? first : last] = v[back ? last : first];
      }
    }
  }
  return out;
}

TEST(MaxPool2x2Kernel, ChannelsLastIsTheChannelsFirstKernelBitForBit) {
  // Every output the one the planes' kernel gives, NaN, infinities and signed zeros included, in
  // float and bf16, on one and three threads.
  for (const auto& [batch, channels, h, w] : std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>>{
           {2, 3, 4, 4}, {1, 5, 5, 7}, {2, 1, 2, 3}, {3, 64, 16, 18}, {1, 2048, 2, 2}}) {
    const std::string what = std::to_string(batch) + " x " + std::to_string(channels) + " x " + std::to_string(h) +
                             " x " + std::to_string(w);
    const std::vector<float> x = mixed(batch * channels * h * w, 91 + channels);
    const std::vector<float> expected = pool(x, batch * channels, h, w);
    const std::vector<float> x_last = channels_last(x, batch, channels, h, w);
    std::vector<uint16_t> x_bf16(x.size());
    for (size_t i = 0; i < x.size(); ++i) x_bf16[i] = float_to_bf16(x[i]);
    std::vector<uint16_t> expected_bf16(expected.size());
    max_pool2x2_bf16_cpu(x_bf16.data(), batch * channels, h, w, expected_bf16.data());
    const std::vector<uint16_t> x_bf16_last = channels_last(x_bf16, batch, channels, h, w);
    const int saved = omp_get_max_threads();
    for (const int threads : {1, 3}) {
      omp_set_num_threads(threads);
      std::vector<float> y(expected.size(), 123.0f);
      max_pool2x2_channels_last_cpu(x_last.data(), batch, channels, h, w, y.data());
      EXPECT_TRUE(same_bits(channels_last(y, batch, channels, h / 2, w / 2, true), expected)) << what;
      std::vector<uint16_t> y_bf16(expected.size(), 0x1234);
      max_pool2x2_channels_last_bf16_cpu(x_bf16_last.data(), batch, channels, h, w, y_bf16.data());
      EXPECT_EQ(channels_last(y_bf16, batch, channels, h / 2, w / 2, true), expected_bf16) << what << " bf16";
    }
    omp_set_num_threads(saved);
  }
  float y = 5.0f;
  max_pool2x2_channels_last_cpu(nullptr, 0, 4, 4, 4, nullptr);
  max_pool2x2_channels_last_cpu(nullptr, 2, 4, 1, 4, &y);  // one row: no output row
  EXPECT_EQ(y, 5.0f);
  try {
    max_pool2x2_channels_last_cpu(&y, 1, -1, 2, 2, &y);
    FAIL() << "negative channels accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("max_pool2x2_channels_last_cpu: sizes must be >= 0"), std::string::npos)
        << e.what();
  }
}

TEST(MaxPool2x2Kernel, EmptyOutputsWriteNothingAndNegativeSizesAreErrors) {
  const std::vector<float> x = {1, 2, 3};
  float y = 5.0f;
  max_pool2x2_cpu(x.data(), 1, 1, 3, &y);  // one row: no output row
  max_pool2x2_cpu(x.data(), 3, 3, 1, &y);  // one column
  max_pool2x2_cpu(nullptr, 0, 4, 4, nullptr);
  EXPECT_EQ(y, 5.0f);
  try {
    max_pool2x2_cpu(x.data(), 1, -2, 2, &y);
    FAIL() << "negative height accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sizes must be >= 0"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace bitrobust::kernels
