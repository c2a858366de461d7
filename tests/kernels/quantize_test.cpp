// Torch-free tests of the fixed-point kernels against an independent scalar transcription of the
// formulas (NOTE [Quantization formulas] in bitrobust/quant/quantize_math.h), plus their bounds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

#include "bitrobust/common/error.h"
#include "bitrobust/common/philox.h"
#include "bitrobust/quant/quantize_kernels.h"
#include "bitrobust/quant/quantize_math.h"

namespace bitrobust::kernels {
namespace {

constexpr float kEps = 0.001f;

std::string describe(const QuantFormat& f) {
  return std::string(f.is_signed ? "s" : "u") + std::to_string(f.bits) +
         (f.asymmetric ? "-asym" : "-sym") + (f.round ? "-round" : "-trunc") +
         "-eps" + std::to_string(f.step_eps);
}

/// Every format for one bit width (step_eps as a global range would use it).
std::vector<QuantFormat> formats_for(int bits) {
  std::vector<QuantFormat> out;
  for (const bool is_signed : {false, true}) {
    for (const bool asymmetric : {false, true}) {
      for (const bool round : {false, true}) out.push_back({bits, is_signed, asymmetric, round, kEps});
    }
  }
  return out;
}

// ---- An independent scalar transcription (libm rounding, no shared code with the kernels) ------

struct RefResult {
  uint32_t pattern;  // the stored m-bit pattern
  float value;       // the dequantized value
};

float ref_clamp(float x, float lo, float hi) { return std::min(std::max(x, lo), hi); }

RefResult ref_quantize(float w, QuantRange r, QuantFormat f) {
  const int64_t half = int64_t{1} << (f.bits - 1);
  const float levels = static_cast<float>(half - 1);
  const int64_t top = 2 * half - 1;
  float lo = -r.hi, hi = r.hi, t = 0.0f, step = 0.0f;
  if (f.asymmetric) {
    lo = r.lo;
    step = (1.0f + f.step_eps) / levels;
    const float scale = r.hi - r.lo;
    float x = (ref_clamp(w, r.lo, r.hi) - r.lo) / (scale > 0.0f ? scale : 1.0f);
    x = ref_clamp(x * 2.0f - 1.0f, -1.0f, 1.0f);
    t = x / step;
  } else {
    step = (r.hi + f.step_eps) / levels;
    t = ref_clamp(w, -r.hi, r.hi) / step;
  }
  int64_t k = 0;
  if (f.round) {
    k = static_cast<int64_t>(std::nearbyint(t));
  } else {
    k = static_cast<int64_t>(f.is_signed ? std::trunc(t) : std::floor(t));
  }
  int64_t value = 0;
  uint32_t pattern = 0;
  if (f.is_signed) {
    value = std::clamp<int64_t>(k, -(half - 1), half - 1);
    pattern = static_cast<uint32_t>(value) & static_cast<uint32_t>(top);
  } else {
    const int64_t code = std::clamp<int64_t>(k + half, 0, top);
    pattern = static_cast<uint32_t>(code);
    value = code - half;
  }
  float y = static_cast<float>(value) * step;
  if (f.asymmetric) {
    y = (ref_clamp(y, -1.0f, 1.0f) + 1.0f) / 2.0f;
    y = y * (r.hi - r.lo) + r.lo;
    return {pattern, ref_clamp(y, r.lo, r.hi)};
  }
  return {pattern, ref_clamp(y, lo, hi)};
}

// ---- Kernel wrappers over std::vector ----------------------------------------------------------

struct Codes {
  int bits;
  std::vector<uint8_t> u8;
  std::vector<uint16_t> u16;
  Codes(int b, size_t n) : bits(b) {
    if (b <= 8) u8.resize(n); else u16.resize(n);
  }
  void* data() { return bits <= 8 ? static_cast<void*>(u8.data()) : static_cast<void*>(u16.data()); }
  uint32_t operator[](size_t i) const { return bits <= 8 ? u8[i] : u16[i]; }
  void set(size_t i, uint32_t v) {
    if (bits <= 8) u8[i] = static_cast<uint8_t>(v); else u16[i] = static_cast<uint16_t>(v);
  }
};

Codes quantize(const std::vector<float>& w, const std::vector<QuantRange>& ranges, QuantFormat f) {
  Codes codes(f.bits, w.size());
  quantize_cpu(w.data(), static_cast<int64_t>(w.size()), static_cast<int64_t>(ranges.size()),
               ranges.data(), f, codes.data());
  return codes;
}

std::vector<float> dequantize(Codes& codes, size_t n, const std::vector<QuantRange>& ranges,
                              QuantFormat f) {
  std::vector<float> out(n);
  dequantize_cpu(codes.data(), static_cast<int64_t>(n), static_cast<int64_t>(ranges.size()),
                 ranges.data(), f, out.data());
  return out;
}

std::vector<float> fake_quantize(const std::vector<float>& w, const std::vector<QuantRange>& ranges,
                                 QuantFormat f) {
  std::vector<float> out(w.size());
  quantize_dequantize_cpu(w.data(), static_cast<int64_t>(w.size()),
                          static_cast<int64_t>(ranges.size()), ranges.data(), f, out.data());
  return out;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// ---- Random weights ----------------------------------------------------------------------------

enum class Distribution { Uniform, Normal, HeavyTailed };

std::vector<float> random_weights(Distribution d, size_t n, uint64_t seed, float scale = 0.1f) {
  PhiloxStream rng(seed, 7);
  std::vector<float> w(n);
  for (float& x : w) {
    const double u = (rng.next_u32() + 0.5) / 4294967296.0;
    const double v = (rng.next_u32() + 0.5) / 4294967296.0;
    switch (d) {
      case Distribution::Uniform: x = static_cast<float>((2.0 * u - 1.0) * scale); break;
      case Distribution::Normal:
        x = static_cast<float>(std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v) * scale);
        break;
      case Distribution::HeavyTailed:  // Cauchy
        x = static_cast<float>(std::tan(3.141592653589793 * (u - 0.5)) * scale * 0.1);
        break;
    }
  }
  return w;
}

/// The per-tensor range of w as the Tensor source computes it (NOTE [Where epsilon goes]).
QuantRange tensor_range(const std::vector<float>& w, bool asymmetric, float clip = 0.0f) {
  float lo = w[0], hi = w[0];
  for (const float x : w) {
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  if (asymmetric) {
    if (clip > 0.0f) {
      lo = ref_clamp(lo, -clip, clip);
      hi = ref_clamp(hi, -clip, clip);
    }
    return {lo, hi};
  }
  float q = static_cast<float>(static_cast<double>(std::max(-lo, hi)) + 0.001);
  if (clip > 0.0f) q = std::min(q, clip);
  return {-q, q};
}

/// step_eps of a per-tensor range (0 symmetric, ε asymmetric).
QuantFormat per_tensor(QuantFormat f) {
  f.step_eps = f.asymmetric ? kEps : 0.0f;
  return f;
}

/// Δ in weight units.
double weight_step(QuantRange r, QuantFormat f) {
  const double levels = (1 << (f.bits - 1)) - 1;
  if (f.asymmetric) return (1.0 + f.step_eps) / levels * (static_cast<double>(r.hi) - r.lo) / 2.0;
  return (static_cast<double>(r.hi) + f.step_eps) / levels;
}

// ---- Tests -------------------------------------------------------------------------------------

TEST(QuantizeKernels, HandComputedEightBitGlobalRange) {
  // normal: m = 8, global q = 1 -> Δ = 1.001 / 127.
  const QuantFormat f{8, false, false, false, kEps};
  const QuantParams p = make_quant_params({-1.0f, 1.0f}, f);
  EXPECT_FLOAT_EQ(p.step, 1.001f / 127.0f);
  EXPECT_NEAR(p.step, 1.001 / 127.0, 1e-9);
  // 0.5 / Δ = 63.43..., -0.5 / Δ = -63.43..., 1 / Δ = 126.87..., 2 is clamped to 1.
  const std::vector<float> w = {0.0f, 0.5f, -0.5f, 1.0f, -1.0f, 2.0f, -2.0f};
  const std::vector<QuantRange> r = {{-1.0f, 1.0f}};
  const Codes unsigned_trunc = quantize(w, r, f);
  const std::vector<uint32_t> expected_unsigned = {128, 191, 64, 254, 1, 254, 1};  // floor + 128
  for (size_t i = 0; i < w.size(); ++i) EXPECT_EQ(unsigned_trunc[i], expected_unsigned[i]) << w[i];

  QuantFormat signed_trunc = f;
  signed_trunc.is_signed = true;
  const Codes s = quantize(w, r, signed_trunc);
  const std::vector<uint32_t> expected_signed = {0, 63, 256 - 63, 126, 256 - 126, 126, 256 - 126};
  for (size_t i = 0; i < w.size(); ++i) EXPECT_EQ(s[i], expected_signed[i]) << w[i];

  QuantFormat unsigned_round = f;
  unsigned_round.round = true;
  const Codes ur = quantize(w, r, unsigned_round);
  const std::vector<uint32_t> expected_round = {128, 191, 65, 255, 1, 255, 1};
  for (size_t i = 0; i < w.size(); ++i) EXPECT_EQ(ur[i], expected_round[i]) << w[i];

  // Dequantized: (code - 128) Δ, clamped to ±1: 127 Δ = 1.001 -> 1.
  std::vector<float> deq = fake_quantize(w, r, unsigned_round);
  EXPECT_EQ(deq[0], 0.0f);
  EXPECT_FLOAT_EQ(deq[1], 63.0f * (1.001f / 127.0f));
  EXPECT_FLOAT_EQ(deq[2], -63.0f * (1.001f / 127.0f));
  EXPECT_EQ(deq[3], 1.0f);
  EXPECT_EQ(deq[4], -1.0f);
  deq = fake_quantize(w, r, f);
  EXPECT_FLOAT_EQ(deq[3], 126.0f * (1.001f / 127.0f));  // truncation: +1 lands below +1
  EXPECT_FLOAT_EQ(deq[2], -64.0f * (1.001f / 127.0f));  // unsigned truncation floors
}

TEST(QuantizeKernels, HandComputedFourBitAndAsymmetric) {
  // m = 4, q = 1: Δ = 1.001 / 7; 0.3 / Δ = 2.098 -> 2; -0.3 -> trunc -2, floor -3.
  const std::vector<QuantRange> r = {{-1.0f, 1.0f}};
  const std::vector<float> w = {0.3f, -0.3f};
  Codes s = quantize(w, r, {4, true, false, false, kEps});
  EXPECT_EQ(s[0], 2u);
  EXPECT_EQ(s[1], 16u - 2u);
  Codes u = quantize(w, r, {4, false, false, false, kEps});
  EXPECT_EQ(u[0], 8u + 2u);
  EXPECT_EQ(u[1], 8u - 3u);

  // rquant, m = 8, range [-0.2, 0.6]: x = 2 (w + 0.2) / 0.8 - 1, Δ = 1.001 / 127.
  const QuantFormat rquant{8, false, true, true, kEps};
  const std::vector<QuantRange> ar = {{-0.2f, 0.6f}};
  const std::vector<float> aw = {0.2f, 0.6f, -0.2f, 1.0f, -1.0f};
  const Codes codes = quantize(aw, ar, rquant);
  EXPECT_EQ(codes[0], 128u);  // x = 0
  EXPECT_EQ(codes[1], 255u);  // x = 1: 126.87 rounds to 127
  EXPECT_EQ(codes[2], 1u);    // x = -1
  EXPECT_EQ(codes[3], 255u);  // clamped to max
  EXPECT_EQ(codes[4], 1u);    // clamped to min
  const std::vector<float> deq = fake_quantize(aw, ar, rquant);
  EXPECT_FLOAT_EQ(deq[0], 0.2f);
  EXPECT_EQ(deq[1], 0.6f);
  EXPECT_EQ(deq[2], -0.2f);
}

TEST(QuantizeKernels, TiesRoundHalfToEven) {
  // q + ε = 31.75 = 127 / 4 with step_eps = 0: Δ = 0.25 exactly, so w = (k + 1/2) / 4 are exact ties.
  for (const bool is_signed : {false, true}) {
    const QuantFormat f{8, is_signed, false, true, 0.0f};
    const std::vector<QuantRange> r = {{-31.75f, 31.75f}};
    const std::vector<float> w = {0.125f, 0.375f, 0.625f, -0.125f, -0.375f, -0.625f, 2.375f};
    const std::vector<float> expected = {0.0f, 0.5f, 0.5f, 0.0f, -0.5f, -0.5f, 2.5f};
    const std::vector<float> got = fake_quantize(w, r, f);
    for (size_t i = 0; i < w.size(); ++i) EXPECT_EQ(got[i], expected[i]) << w[i] << " signed " << is_signed;
  }
}

TEST(QuantizeKernels, MatchesScalarFormulasForEveryFormatAndWidth) {
  for (int bits = 2; bits <= 16; ++bits) {
    for (QuantFormat f : formats_for(bits)) {
      for (const float step_eps : {kEps, 0.0f}) {
        f.step_eps = step_eps;
        const uint64_t seed = 1000 + bits;
        std::vector<float> w = random_weights(Distribution::Normal, 3000, seed, 0.3f);
        w.push_back(0.0f);
        w.push_back(-0.0f);
        w.push_back(5.0f);
        w.push_back(-5.0f);
        const std::vector<QuantRange> r = {f.asymmetric ? QuantRange{-0.4f, 0.7f} : QuantRange{-0.5f, 0.5f}};
        const Codes codes = quantize(w, r, f);
        const std::vector<float> fused = fake_quantize(w, r, f);
        Codes copy = codes;
        const std::vector<float> deq = dequantize(copy, w.size(), r, f);
        for (size_t i = 0; i < w.size(); ++i) {
          const RefResult ref = ref_quantize(w[i], r[0], f);
          ASSERT_EQ(codes[i], ref.pattern) << describe(f) << " w=" << w[i] << " seed " << seed;
          ASSERT_TRUE(same_bits(deq[i], ref.value)) << describe(f) << " w=" << w[i] << " got " << deq[i] << " want " << ref.value;
          ASSERT_TRUE(same_bits(fused[i], deq[i])) << describe(f) << " w=" << w[i];
        }
      }
    }
  }
}

// Subnormal weights and NaN quantize as +0 whether or not the thread flushes subnormals (the CLI's
// CPU threads do, CUDA does not), so both devices give them one code: the code of 0. Before, a
// negative subnormal weight truncated to the code below 0 where it was not flushed.
TEST(QuantizeKernels, SubnormalAndNaNWeightsQuantizeAsZeroWithOrWithoutFlushing) {
  const std::vector<float> w = {-1e-39f, 1e-39f, -1.4e-45f, std::numeric_limits<float>::quiet_NaN(), -0.0f,
                                -std::numeric_limits<float>::min(), 0.25f};
  for (int bits : {2, 8, 16}) {
    for (const QuantFormat& f : formats_for(bits)) {
      const std::vector<QuantRange> r = {f.asymmetric ? QuantRange{-0.4f, 0.7f} : QuantRange{-0.5f, 0.5f}};
      const Codes zero = quantize({0.0f}, r, f);
      const Codes plain = quantize(w, r, f);
      for (size_t i = 0; i < 5; ++i) ASSERT_EQ(plain[i], zero[0]) << describe(f) << " w=" << w[i];
      ASSERT_EQ(plain[5], ref_quantize(w[5], r[0], f).pattern) << describe(f) << " (the smallest normal float)";
#if defined(__x86_64__)
      const unsigned saved = _mm_getcsr();
      _mm_setcsr(saved | 0x8040u);  // flush to zero, denormals are zero (this thread: w is too short to split)
      const Codes flushed = quantize(w, r, f);
      _mm_setcsr(saved);
      for (size_t i = 0; i < w.size(); ++i) ASSERT_EQ(flushed[i], plain[i]) << describe(f) << " w=" << w[i];
#endif
    }
  }
  // A normal weight whose quotient by a step above 1 is subnormal (2-bit symmetric with q = 1: step
  // 1.001) quantizes as 0 too, flushed or not; it had truncated to the code below 0 unflushed.
  for (const QuantFormat& f : formats_for(2)) {
    if (f.asymmetric) continue;
    const std::vector<QuantRange> r = {QuantRange{-1.0f, 1.0f}};
    const std::vector<float> tiny = {-1.1760e-38f, 1.1760e-38f};
    ASSERT_LT(std::abs(tiny[0]) / make_quant_params(r[0], f).step, std::numeric_limits<float>::min());
    const Codes plain = quantize(tiny, r, f), zero = quantize({0.0f}, r, f);
    for (size_t i = 0; i < tiny.size(); ++i) ASSERT_EQ(plain[i], zero[0]) << describe(f) << " w=" << tiny[i];
#if defined(__x86_64__)
    const unsigned saved = _mm_getcsr();
    _mm_setcsr(saved | 0x8040u);
    const Codes flushed = quantize(tiny, r, f);
    _mm_setcsr(saved);
    for (size_t i = 0; i < tiny.size(); ++i) ASSERT_EQ(flushed[i], plain[i]) << describe(f) << " w=" << tiny[i];
#endif
  }
  // A range taken from subnormal extremes is the range of zeros.
  RangeRule asym;
  asym.kind = RangeRule::kAsymmetric;
  const QuantRange from_subnormals = range_of_channel(-1e-39f, 1e-39f, asym);
  EXPECT_EQ(from_subnormals.lo, 0.0f);
  EXPECT_EQ(from_subnormals.hi, 0.0f);
  EXPECT_FALSE(std::signbit(from_subnormals.lo));
  // Weights all below 1e-30 in magnitude: their range's width (here one float step at 5e-32, about
  // 6e-39, subnormal) would depend on flushing, so the channel is the constant 0; from 1e-30 on the
  // range is the weights' own.
  ASSERT_LT(std::nextafterf(5e-32f, 1.0f) - 5e-32f, std::numeric_limits<float>::min());
  const QuantRange tiny = range_of_channel(5e-32f, std::nextafterf(5e-32f, 1.0f), asym);
  EXPECT_EQ(tiny.lo, 0.0f);
  EXPECT_EQ(tiny.hi, 0.0f);
  const QuantRange small = range_of_channel(-1e-30f, 2e-30f, asym);
  EXPECT_EQ(small.lo, -1e-30f);
  EXPECT_EQ(small.hi, 2e-30f);
}

TEST(QuantizeKernels, RoundTripErrorBounds) {
  for (const Distribution d : {Distribution::Uniform, Distribution::Normal, Distribution::HeavyTailed}) {
    for (int bits = 2; bits <= 16; ++bits) {
      const uint64_t seed = 42 + 100 * static_cast<int>(d) + bits;
      const std::vector<float> w = random_weights(d, 4096, seed);
      for (QuantFormat f : formats_for(bits)) {
        f = per_tensor(f);
        const std::vector<QuantRange> r = {tensor_range(w, f.asymmetric)};
        const std::vector<float> out = fake_quantize(w, r, f);
        const double step = weight_step(r[0], f);
        const double max_abs = std::max(-r[0].lo, r[0].hi);
        // Float slop: a few ulps of the values involved.
        const double slop = 4.0 * std::numeric_limits<float>::epsilon() * (max_abs + 1.0 * step);
        double worst = 0.0;
        for (size_t i = 0; i < w.size(); ++i) {
          ASSERT_TRUE(std::isfinite(out[i]));
          worst = std::max(worst, std::abs(static_cast<double>(out[i]) - w[i]));
        }
        if (f.round) {
          EXPECT_LE(worst, step / 2 + slop) << describe(f) << " seed " << seed;
        } else {
          EXPECT_LT(worst, step + slop) << describe(f) << " seed " << seed;
        }
      }
    }
  }
}

TEST(QuantizeKernels, ZeroMapsToZeroInSymmetricSchemes) {
  for (int bits = 2; bits <= 16; ++bits) {
    for (QuantFormat f : formats_for(bits)) {
      if (f.asymmetric) continue;
      for (const float step_eps : {kEps, 0.0f}) {
        f.step_eps = step_eps;
        const std::vector<float> out = fake_quantize({0.0f, -0.0f}, {{-0.37f, 0.37f}}, f);
        EXPECT_EQ(out[0], 0.0f) << describe(f);
        EXPECT_EQ(out[1], 0.0f) << describe(f);
      }
    }
  }
}

TEST(QuantizeKernels, RoundingClipsBeyondWmaxOntoWmax) {
  // Clipped per-tensor ranges: q = w_max (the clip binds), symmetric step_eps = 0, so w_max / Δ = L
  // and rounding lands exactly on ±w_max. Asymmetric formats map w_max to x = 1, t = L / (1 + ε):
  // that rounds to L only while L ε / (1 + ε) < 1/2, i.e. m <= 9 (the reference's inner q = 1
  // scheme); above, the extreme lands within Δ/2 of w_max like any other weight.
  for (int bits = 2; bits <= 16; ++bits) {
    for (const float w_max : {0.1f, 0.05f, 0.25f}) {
      for (QuantFormat f : formats_for(bits)) {
        if (!f.round) continue;
        f = per_tensor(f);
        const std::vector<QuantRange> r = {{-w_max, w_max}};
        const std::vector<float> out = fake_quantize({w_max, 3.0f * w_max, 100.0f, -w_max, -7.0f * w_max}, r, f);
        const bool exact = !f.asymmetric || bits <= 9;
        const double tol = exact ? 4.0 * std::numeric_limits<float>::epsilon() * w_max
                                 : weight_step(r[0], f) / 2 + 4.0 * std::numeric_limits<float>::epsilon() * w_max;
        for (int i = 0; i < 3; ++i) EXPECT_NEAR(out[i], w_max, tol) << describe(f) << " w_max " << w_max;
        for (int i = 3; i < 5; ++i) EXPECT_NEAR(out[i], -w_max, tol) << describe(f) << " w_max " << w_max;
        EXPECT_LE(out[0], w_max);
        EXPECT_GE(out[3], -w_max);
      }
    }
  }
}

TEST(QuantizeKernels, SignedAndUnsignedAgreeWithRoundingDifferWithTruncation) {
  for (int bits = 2; bits <= 16; ++bits) {
    const uint64_t seed = 77 + bits;
    const std::vector<float> w = random_weights(Distribution::Normal, 4096, seed);
    for (const bool round : {true, false}) {
      for (const float step_eps : {kEps, 0.0f}) {
        const QuantFormat s{bits, true, false, round, step_eps}, u{bits, false, false, round, step_eps};
        const std::vector<QuantRange> r = {tensor_range(w, false)};
        const std::vector<float> a = fake_quantize(w, r, s), b = fake_quantize(w, r, u);
        int differing = 0;
        for (size_t i = 0; i < w.size(); ++i) {
          if (round || w[i] >= 0.0f) {
            ASSERT_TRUE(same_bits(a[i], b[i]) || (a[i] == 0.0f && b[i] == 0.0f))
                << "bits " << bits << " round " << round << " w=" << w[i] << " seed " << seed;
          } else {
            // Signed truncates toward zero, unsigned floors: the signed value is never lower.
            ASSERT_GE(a[i], b[i]) << "bits " << bits << " w=" << w[i];
            differing += a[i] != b[i];
          }
        }
        if (!round) EXPECT_GT(differing, 0) << "bits " << bits;
      }
    }
  }
}

TEST(QuantizeKernels, TruncationNeverReachesTopCode) {
  for (int bits = 2; bits <= 16; ++bits) {
    const std::vector<float> w = random_weights(Distribution::Uniform, 2048, 5 + bits);
    for (QuantFormat f : formats_for(bits)) {
      if (f.round) continue;
      const int32_t half = 1 << (bits - 1);
      // Global range (ε in Δ) with weights at and beyond ±q, and per-tensor ranges (ε in q).
      std::vector<float> extreme = w;
      for (const float x : {0.1f, -0.1f, 0.2f, -0.2f, 1e6f, -1e6f}) extreme.push_back(x);
      struct Case {
        const std::vector<float>& input;
        QuantRange range;
        QuantFormat format;
      };
      const Case cases[] = {{extreme, QuantRange{-0.1f, 0.1f}, f},
                            {w, tensor_range(w, f.asymmetric), per_tensor(f)}};
      for (const Case& c : cases) {
        const Codes codes = quantize(c.input, {c.range}, c.format);
        for (size_t i = 0; i < c.input.size(); ++i) {
          if (f.is_signed) {
            const int32_t value = value_of_pattern<true>(codes[i], make_quant_params(c.range, c.format));
            ASSERT_LT(value, half - 1) << describe(c.format) << " w=" << c.input[i];
          } else {
            ASSERT_LT(codes[i], static_cast<uint32_t>(2 * half - 1)) << describe(c.format) << " w=" << c.input[i];
          }
        }
      }
    }
  }
}

TEST(QuantizeKernels, ConstantChannelsAreExactWithoutNaN) {
  for (int bits = 2; bits <= 16; ++bits) {
    for (QuantFormat f : formats_for(bits)) {
      f = per_tensor(f);
      for (const float c : {0.0f, 0.37f, -1.5f, 1e-7f}) {
        if (!f.asymmetric && c != 0.0f) continue;  // symmetric: only zero is on the grid
        const std::vector<float> w(17, c);
        const std::vector<QuantRange> r = {tensor_range(w, f.asymmetric)};
        const std::vector<float> out = fake_quantize(w, r, f);
        Codes codes = quantize(w, r, f);
        const std::vector<float> deq = dequantize(codes, w.size(), r, f);
        for (size_t i = 0; i < w.size(); ++i) {
          ASSERT_EQ(out[i], c) << describe(f);
          ASSERT_EQ(deq[i], c) << describe(f);
        }
      }
    }
  }
}

TEST(QuantizeKernels, PerChannelRangesMatchSeparateQuantization) {
  // 5 channels of very different scales, more elements than one parallel block.
  const int64_t channels = 5, per = 7001;
  std::vector<float> w;
  std::vector<QuantRange> ranges;
  for (int64_t c = 0; c < channels; ++c) {
    std::vector<float> part = random_weights(Distribution::Normal, per, 900 + c, std::pow(10.0f, -c));
    w.insert(w.end(), part.begin(), part.end());
  }
  for (int bits : {2, 4, 8, 12, 16}) {
    for (QuantFormat f : formats_for(bits)) {
      f = per_tensor(f);
      ranges.clear();
      for (int64_t c = 0; c < channels; ++c) {
        ranges.push_back(tensor_range({w.begin() + c * per, w.begin() + (c + 1) * per}, f.asymmetric));
      }
      const Codes all = quantize(w, ranges, f);
      const std::vector<float> fused = fake_quantize(w, ranges, f);
      for (int64_t c = 0; c < channels; ++c) {
        const std::vector<float> part(w.begin() + c * per, w.begin() + (c + 1) * per);
        const Codes alone = quantize(part, {ranges[c]}, f);
        const double step = weight_step(ranges[c], f);
        const double slop = 4.0 * std::numeric_limits<float>::epsilon() *
                            (std::max(-ranges[c].lo, ranges[c].hi) + step);
        for (int64_t i = 0; i < per; ++i) {
          ASSERT_EQ(all[c * per + i], alone[i]) << describe(f) << " channel " << c;
          ASSERT_LE(std::abs(fused[c * per + i] - part[i]), step + slop) << describe(f) << " channel " << c;
        }
      }
    }
  }
}

TEST(QuantizeKernels, LargeTensorsAgreeWithScalarFormulas) {
  // Enough elements to run in parallel (>= 2^18), channel boundaries inside blocks.
  const int64_t channels = 3, per = 100003;
  const std::vector<float> w = random_weights(Distribution::HeavyTailed, channels * per, 31);
  const std::vector<QuantRange> ranges = {{-0.05f, 0.05f}, {-0.3f, 0.2f}, {-1.0f, 1.0f}};
  for (const QuantFormat& f : {QuantFormat{8, false, true, true, kEps}, QuantFormat{11, true, false, false, 0.0f}}) {
    const Codes codes = quantize(w, ranges, f);
    const std::vector<float> fused = fake_quantize(w, ranges, f);
    std::vector<float> in_place = w;
    quantize_dequantize_cpu(in_place.data(), channels * per, channels, ranges.data(), f, in_place.data());
    for (int64_t i = 0; i < channels * per; ++i) {
      const RefResult ref = ref_quantize(w[i], ranges[i / per], f);
      ASSERT_EQ(codes[i], ref.pattern) << describe(f) << " i=" << i;
      ASSERT_TRUE(same_bits(fused[i], ref.value)) << describe(f) << " i=" << i;
      ASSERT_TRUE(same_bits(in_place[i], ref.value)) << describe(f) << " i=" << i;
    }
  }
}

TEST(QuantizeKernels, QuantizeAndDequantizeManyUseEveryTasksOwnFormat) {
  // One call over tensors of different formats, containers, channel counts and sizes (an empty one
  // in the middle, 2^18 elements in all so the call runs in parallel): each equals the scalar formula.
  struct Case {
    QuantFormat format;
    std::vector<QuantRange> ranges;
    int64_t n;
  };
  const std::vector<Case> cases = {
      {{8, false, true, true, kEps}, {{-0.3f, 0.2f}}, 200003},
      {{4, true, false, false, 0.0f}, {{-0.1f, 0.1f}, {-0.4f, 0.4f}, {-1.0f, 1.0f}}, 3 * 5000},
      {{8, true, true, false, kEps}, {{-0.2f, 0.5f}}, 0},
      {{12, false, false, true, kEps}, {{-0.5f, 0.5f}, {-0.05f, 0.05f}}, 2 * 20001},
      {{2, false, false, false, kEps}, {{-1.0f, 1.0f}}, 1},
      {{16, true, true, true, kEps}, {{-2.0f, 0.5f}}, 16385},
  };
  std::vector<std::vector<float>> weights;
  std::vector<Codes> codes;
  std::vector<std::vector<float>> outs;
  std::vector<DequantizeTask> tasks;
  for (size_t t = 0; t < cases.size(); ++t) {
    const Case& c = cases[t];
    weights.push_back(random_weights(Distribution::HeavyTailed, static_cast<size_t>(c.n), 70 + t, 0.3f));
    codes.push_back(quantize(weights.back(), c.ranges, c.format));
    outs.emplace_back(static_cast<size_t>(c.n), -7.0f);
  }
  for (size_t t = 0; t < cases.size(); ++t) {
    tasks.push_back({codes[t].data(), cases[t].n, static_cast<int64_t>(cases[t].ranges.size()), cases[t].ranges.data(),
                     cases[t].format, outs[t].data()});
  }
  dequantize_many_cpu(tasks.data(), static_cast<int64_t>(tasks.size()));
  // The codes again, all tasks in one call.
  std::vector<Codes> again;
  std::vector<QuantizeTask> quantize_tasks;
  for (size_t t = 0; t < cases.size(); ++t) again.emplace_back(cases[t].format.bits, static_cast<size_t>(cases[t].n));
  for (size_t t = 0; t < cases.size(); ++t) {
    quantize_tasks.push_back({weights[t].data(), cases[t].n, static_cast<int64_t>(cases[t].ranges.size()),
                              cases[t].ranges.data(), cases[t].format, again[t].data()});
  }
  quantize_many_cpu(quantize_tasks.data(), static_cast<int64_t>(quantize_tasks.size()));
  for (size_t t = 0; t < cases.size(); ++t) {
    for (int64_t i = 0; i < cases[t].n; ++i) ASSERT_EQ(again[t][i], codes[t][i]) << "task " << t << " i=" << i;
  }
  for (size_t t = 0; t < cases.size(); ++t) {
    const Case& c = cases[t];
    const int64_t per = c.n / static_cast<int64_t>(c.ranges.size());
    for (int64_t i = 0; i < c.n; ++i) {
      const RefResult ref = ref_quantize(weights[t][i], c.ranges[i / per], c.format);
      ASSERT_TRUE(same_bits(outs[t][i], ref.value)) << "task " << t << " " << describe(c.format) << " i=" << i;
    }
  }
  // A bad task anywhere is reported before any output is written.
  std::vector<float> untouched(16, -7.0f);
  std::vector<uint8_t> few(16, 3);
  const QuantRange r{-1.0f, 1.0f};
  const std::vector<DequantizeTask> bad = {{few.data(), 16, 1, &r, {8, false, false, false, kEps}, untouched.data()},
                                           {few.data(), 16, 3, &r, {8, false, false, false, kEps}, untouched.data()}};
  EXPECT_THROW(dequantize_many_cpu(bad.data(), 2), Error);
  for (float v : untouched) EXPECT_EQ(v, -7.0f);
}

TEST(QuantizeKernels, CodesNeverUseBitsAboveM) {
  for (int bits = 2; bits <= 16; ++bits) {
    std::vector<float> w = random_weights(Distribution::HeavyTailed, 4096, 300 + bits, 1.0f);
    for (const QuantFormat& f : formats_for(bits)) {
      const Codes codes = quantize(w, {{-0.5f, 0.8f}}, f);
      const uint32_t mask = (1u << bits) - 1u;
      for (size_t i = 0; i < w.size(); ++i) ASSERT_EQ(codes[i] & ~mask, 0u) << describe(f) << " w=" << w[i];
    }
  }
}

TEST(QuantizeKernels, EveryContainerValueDequantizesIntoRange) {
  // Bit errors can produce any container value, bits above m included.
  for (int bits = 2; bits <= 16; ++bits) {
    const size_t values = bits <= 8 ? 256 : 65536;
    for (QuantFormat f : formats_for(bits)) {
      for (const QuantRange r : {QuantRange{-0.1f, 0.1f}, QuantRange{-0.03f, 0.2f}, QuantRange{0.5f, 0.5f}}) {
        if (!f.asymmetric && r.lo != -r.hi) continue;
        Codes codes(bits, values);
        for (size_t v = 0; v < values; ++v) codes.set(v, static_cast<uint32_t>(v));
        const std::vector<float> out = dequantize(codes, values, {r}, f);
        const uint32_t mask = (1u << bits) - 1u;
        for (size_t v = 0; v < values; ++v) {
          ASSERT_TRUE(out[v] >= r.lo && out[v] <= r.hi) << describe(f) << " code " << v << " -> " << out[v];
          ASSERT_TRUE(same_bits(out[v], out[v & mask])) << describe(f) << " code " << v;
        }
      }
    }
  }
}

TEST(QuantizeKernels, RejectsBadArguments) {
  const std::vector<float> w(6, 0.0f);
  std::vector<uint16_t> codes(6);
  std::vector<float> out(6);
  const QuantRange r[2] = {{-1.0f, 1.0f}, {-1.0f, 1.0f}};
  EXPECT_THROW(quantize_cpu(w.data(), 6, 1, r, {1, false, false, false, kEps}, codes.data()), Error);
  EXPECT_THROW(quantize_cpu(w.data(), 6, 1, r, {17, false, false, false, kEps}, codes.data()), Error);
  EXPECT_THROW(quantize_cpu(w.data(), 6, 0, r, {8, false, false, false, kEps}, codes.data()), Error);
  EXPECT_THROW(dequantize_cpu(codes.data(), 5, 2, r, {8, false, false, false, kEps}, out.data()), Error);
  EXPECT_THROW(quantize_dequantize_cpu(w.data(), -1, 1, r, {8, false, false, false, kEps}, out.data()), Error);
  try {
    quantize_cpu(w.data(), 6, 1, r, {17, false, false, false, kEps}, codes.data());
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bits must be in [2, 16], got 17"), std::string::npos) << e.what();
  }
  quantize_cpu(w.data(), 0, 1, r, {8, false, false, false, kEps}, codes.data());  // n = 0: nothing
}

TEST(QuantizeKernels, MinMaxPerChannelAndFiniteness) {
  const int64_t per = 100000;  // 3 * per >= 2^18: the parallel reduction runs
  std::vector<float> w = random_weights(Distribution::Normal, 3 * per, 12);
  float mins[3], maxs[3];
  ASSERT_TRUE(minmax_cpu(w.data(), static_cast<int64_t>(w.size()), 3, mins, maxs));
  for (int c = 0; c < 3; ++c) {
    const auto [lo, hi] = std::minmax_element(w.begin() + c * per, w.begin() + (c + 1) * per);
    EXPECT_EQ(mins[c], *lo);
    EXPECT_EQ(maxs[c], *hi);
  }
  ASSERT_TRUE(minmax_cpu(w.data(), static_cast<int64_t>(w.size()), 1, mins, maxs));
  EXPECT_EQ(mins[0], *std::min_element(w.begin(), w.end()));
  EXPECT_EQ(maxs[0], *std::max_element(w.begin(), w.end()));
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()}) {
    std::vector<float> v = w;
    v[2 * per + 70001] = bad;
    EXPECT_FALSE(minmax_cpu(v.data(), static_cast<int64_t>(v.size()), 1, mins, maxs)) << bad;
    EXPECT_FALSE(minmax_cpu(v.data(), static_cast<int64_t>(v.size()), 3, mins, maxs)) << bad;
  }
}

}  // namespace
}  // namespace bitrobust::kernels
