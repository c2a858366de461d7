#pragma once
// Per-element fixed-point formulas, compiled identically for the host and for CUDA (BR_HOST_DEVICE).
// The CPU kernels, the CUDA twins and fused bit error kernels all call these functions, so the
// results agree bit for bit (only IEEE +, -, *, / and float<->int conversions; the kernels are built
// without contraction, see NOTE [Deterministic floating point] in CMakeLists.txt).
//
// NOTE [Quantization formulas]: with m bits, L = 2^(m-1) - 1 levels on each side, H = 2^(m-1):
//   symmetric, range q (= QuantRange::hi):  Δ = (q + ε) / L,  t = clamp(w, -q, q) / Δ
//   asymmetric, range [lo, hi]:             Δ = (1 + ε) / L,  x = (clamp(w, lo, hi) - lo) / (hi - lo),
//                                           t = clamp(2x - 1, -1, 1) / Δ   (the symmetric scheme, q = 1)
//   signed code:    k = trunc(t) (toward zero) or rint(t); the pattern is k mod 2^m (two's complement)
//   unsigned code:  k = floor(t) + H or rint(t) + H, clamped to [0, 2^m - 1] (offset binary)
//   dequantize:     v = sign-extended pattern (signed) or pattern - H (unsigned), both of the m low
//                   bits only; symmetric ŵ = clamp(v Δ, -q, q); asymmetric
//                   ŵ = clamp((clamp(v Δ, -1, 1) + 1) / 2 * (hi - lo) + lo, lo, hi).
// rint is round-half-to-even (torch.round, std::nearbyint). This is the reference's arithmetic in
// the reference's order, float32 throughout (where the reference computes a global or asymmetric
// Δ = (q + ε) / L from Python numbers in double precision and rounds it once, ours can be one
// float step away, relative 0.9e-7 to 1.2e-7: at q = 1 with 3, 5, 6 or 7 bits, not 8), with two
// deliberate differences:
//  - Unsigned codes add H as an integer after rounding (floor(t) + H, rint(t) + H); the reference
//    adds H in float first, which rounds t + H to the float grid near H (2^-8 apart at m = 16), so
//    t within that distance of a rounding boundary moved across it. In exact arithmetic both are
//    the same; ours keeps signed and unsigned rounding identical and the truncation floor exact.
//  - A constant asymmetric channel (hi = lo) divides by 1 instead of 0: x = 0, and the dequantized
//    value is (…) * 0 + lo = lo exactly, never NaN.
//
// NOTE [Where epsilon goes]: the reference adds ε = 0.001 to a bound before computing Δ, at a
// different place per range source. Global range q: Δ = (q + ε) / L, clamp to ±q. Per tensor (and
// our per channel): q = max|w| + ε, Δ = q / L, clamp to ±q. Clipped: q = min(max|w| + ε, w_max),
// Δ = q / L, clamp to ±q. Asymmetric: always the global scheme with q = 1, Δ = (1 + ε) / L. So the
// QuantRange holds the clamp bound q and QuantFormat::step_eps says what is added for Δ: 0.001 for
// global and asymmetric formats, 0 for symmetric per-tensor/per-channel ones. Consequences: with
// truncation the top code (L, or 2^m - 1 unsigned) is never produced, except by a weight clipped
// at exactly w_max (t = L up to float rounding, as in the reference); with rounding, symmetric
// weights at or beyond w_max land on ±w_max up to float rounding. Asymmetric extremes (x = ±1,
// t = ±L / (1 + ε)) round to ±L only while L ε / (1 + ε) < 1/2, i.e. m <= 9; with more bits they
// land within Δ/2 of the bound like any other value (the reference's inner q = 1 scheme).
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "bitrobust/common/error.h"
#include "bitrobust/common/philox.h"  // BR_HOST_DEVICE
#include "bitrobust/quant/quantize_kernels.h"

namespace bitrobust::kernels {

/// ε of NOTE [Where epsilon goes].
constexpr float kQuantEps = 0.001f;
/// Largest bound (global q, clip w_max) and weight magnitude accepted: beyond about 1.7e38 the width
/// of a range, hi - lo, overflows float, and dequantization would compute 0 * inf = NaN.
constexpr float kMaxQuantMagnitude = 1e30f;
/// Smallest bound (global q, clip w_max) accepted: Δ = bound / (2^(m-1) - 1) stays a normal float
/// (above 1.2e-38) for every width up to 16 bits, so flushing subnormals cannot change a code.
constexpr float kMinQuantBound = 1e-30f;

/// A weight below the smallest normal float in magnitude, or NaN, counts as +0. The CLI's CPU threads
/// read subnormals as 0 (flush_denormals.h) and CUDA does not, and NaN converts to a different
/// integer on each: without this the same weights could get other codes on the two devices.
constexpr float kSmallestNormalFloat = 1.17549435e-38f;  ///< FLT_MIN, spelled for host and device alike
BR_HOST_DEVICE float flush_to_zero(float w) { return fabsf(w) >= kSmallestNormalFloat ? w : 0.0f; }

/// The range of one channel from the minimum and maximum of its (finite) weights; see NOTE [Range
/// rows] in src/quant/quantizer.cpp and NOTE [Where epsilon goes]. Only min/max and one IEEE double
/// addition rounded once to float: the host and CUDA get the same floats.
BR_HOST_DEVICE QuantRange range_of_channel(float min_w, float max_w, const RangeRule& rule) {
  if (rule.kind == RangeRule::kGlobal) return QuantRange{-rule.global_q, rule.global_q};
  // flush_to_zero also makes -0 +0: which zero a reduction returns must not matter (the host and
  // CUDA may differ).
  min_w = flush_to_zero(min_w);
  max_w = flush_to_zero(max_w);
  const bool clipped = rule.clip > 0.0f;
  if (rule.kind == RangeRule::kSymmetric) {
    const float max_abs = -min_w > max_w ? -min_w : max_w;
    float q = static_cast<float>(static_cast<double>(max_abs) + static_cast<double>(kQuantEps));
    if (clipped && rule.clip < q) q = rule.clip;
    return QuantRange{-q, q};
  }
  // The reference clamps the weights to ±w_max before taking min and max.
  if (clipped) {
    min_w = min_w < -rule.clip ? -rule.clip : (min_w > rule.clip ? rule.clip : min_w);
    max_w = max_w < -rule.clip ? -rule.clip : (max_w > rule.clip ? rule.clip : max_w);
  }
  // Weights all below 1e-30 in magnitude: their range's width could be a subnormal float, which the
  // CPU's threads flush and CUDA does not. Such a channel is the constant 0 (above that magnitude
  // two distinct floats differ by a normal float).
  if (fabsf(min_w) < kMinQuantBound && fabsf(max_w) < kMinQuantBound) {
    min_w = max_w = 0.0f;
  }
  return QuantRange{min_w, max_w};
}

/// Everything one channel's formulas need, derived from its QuantRange and the QuantFormat.
struct QuantParams {
  float lo, hi;      ///< clamp bounds of w (symmetric: -q, q)
  float step;        ///< Δ
  float scale;       ///< asymmetric: hi - lo
  float divisor;     ///< asymmetric: hi - lo, or 1 for a constant channel
  float unit;        ///< 1: the asymmetric scheme's normalized bound (a field, not a literal: see
                     ///< opaque() in quantize_cpu.cpp)
  int32_t half;      ///< H = 2^(m-1)
  int32_t levels;    ///< L = 2^(m-1) - 1
  int32_t top;       ///< 2^m - 1, also the mask of the m code bits
};

BR_HOST_DEVICE float clamp_float(float x, float lo, float hi) {
  x = x < lo ? lo : x;
  return x > hi ? hi : x;
}

BR_HOST_DEVICE int32_t clamp_int(int32_t x, int32_t lo, int32_t hi) {
  x = x < lo ? lo : x;
  return x > hi ? hi : x;
}

/// Round half to even to int, exact for |t| < 2^22 (codes stay below 2^16 in magnitude).
BR_HOST_DEVICE int32_t round_half_even_to_int(float t) {
#if defined(__CUDA_ARCH__)
  return __float2int_rn(t);
#else
  // Adding 1.5 * 2^23 leaves no fraction bits, so the FPU's round-to-nearest-even does the
  // rounding; unlike nearbyintf this vectorizes with plain SSE2.
  constexpr float kMagic = 12582912.0f;
  return static_cast<int32_t>((t + kMagic) - kMagic);
#endif
}

/// floor(t) as int, for |t| < 2^31.
BR_HOST_DEVICE int32_t floor_to_int(float t) {
#if defined(__CUDA_ARCH__)
  return __float2int_rd(t);
#else
  const int32_t toward_zero = static_cast<int32_t>(t);
  return toward_zero - (static_cast<float>(toward_zero) > t ? 1 : 0);
#endif
}

BR_HOST_DEVICE QuantParams make_quant_params(QuantRange r, QuantFormat f) {
  QuantParams p;
  p.half = int32_t{1} << (f.bits - 1);
  p.levels = p.half - 1;
  p.top = (int32_t{1} << f.bits) - 1;
  p.unit = 1.0f;
  if (f.asymmetric) {
    p.lo = r.lo;
    p.hi = r.hi;
    p.scale = r.hi - r.lo;
    p.divisor = p.scale > 0.0f ? p.scale : 1.0f;
    p.step = (p.unit + f.step_eps) / static_cast<float>(p.levels);
  } else {
    p.lo = -r.hi;
    p.hi = r.hi;
    p.scale = 0.0f;
    p.divisor = 1.0f;
    p.step = (r.hi + f.step_eps) / static_cast<float>(p.levels);
  }
  return p;
}

/// t of NOTE [Quantization formulas]: w in code units, before rounding or truncation.
template <bool Asymmetric>
BR_HOST_DEVICE float code_units(float w, const QuantParams& p) {
  float t = clamp_float(flush_to_zero(w), p.lo, p.hi);
  if constexpr (Asymmetric) {
    t = (t - p.lo) / p.divisor;
    t = t * 2.0f - p.unit;
    t = clamp_float(t, -p.unit, p.unit);
  }
  // With a step above 1 (2-bit symmetric ranges, large global bounds) a normal t can give a
  // subnormal quotient, whose floor is 0 or -1 depending on whether the thread flushes subnormals
  // (found by a review: a file quantized by one command was refused by another). Flushed here, as
  // the weight is above; NaN (a NaN range) stays NaN.
  const float units = t / p.step;
  return fabsf(units) < kSmallestNormalFloat ? 0.0f : units;
}

/// The integer code of t: signed value in [-L, L], or unsigned code in [0, 2^m - 1].
template <bool Signed, bool Round>
BR_HOST_DEVICE int32_t code_of(float t, const QuantParams& p) {
  if constexpr (Signed) {
    const int32_t k = Round ? round_half_even_to_int(t) : static_cast<int32_t>(t);
    return clamp_int(k, -p.levels, p.levels);
  } else {
    const int32_t k = (Round ? round_half_even_to_int(t) : floor_to_int(t)) + p.half;
    return clamp_int(k, 0, p.top);
  }
}

/// The m-bit pattern stored for a code from code_of.
BR_HOST_DEVICE uint32_t pattern_of(int32_t code, const QuantParams& p) {
  return static_cast<uint32_t>(code) & static_cast<uint32_t>(p.top);
}

/// Signed integer value (v of the NOTE) of a container's content; bits above m are ignored.
template <bool Signed>
BR_HOST_DEVICE int32_t value_of_pattern(uint32_t container, const QuantParams& p) {
  const int32_t bits = static_cast<int32_t>(container & static_cast<uint32_t>(p.top));
  if constexpr (Signed) {
    return (bits ^ p.half) - p.half;  // sign-extend from m bits
  } else {
    return bits - p.half;
  }
}

/// v of a code straight from code_of (the fused path: no pattern round trip needed).
template <bool Signed>
BR_HOST_DEVICE int32_t value_of_code(int32_t code, const QuantParams& p) {
  if constexpr (Signed) {
    return code;
  } else {
    return code - p.half;
  }
}

/// ŵ of NOTE [Quantization formulas] for the integer value v.
template <bool Asymmetric>
BR_HOST_DEVICE float dequantize_value(int32_t v, const QuantParams& p) {
  float y = static_cast<float>(v) * p.step;
  if constexpr (Asymmetric) {
    y = clamp_float(y, -p.unit, p.unit);
    y = (y + p.unit) / 2.0f;
    y = y * p.scale + p.lo;
  }
  return clamp_float(y, p.lo, p.hi);
}

// Host-side helpers for the kernel entry points (CPU and CUDA).

/// Throws bitrobust::Error for arguments no kernel can honour.
inline void check_quant_kernel_args(const char* kernel, int64_t n, int64_t channels, QuantFormat f) {
  BR_CHECK(f.bits >= 2 && f.bits <= 16, kernel, ": bits must be in [2, 16], got ", f.bits);
  BR_CHECK(channels >= 1, kernel, ": channels must be >= 1, got ", channels);
  BR_CHECK(n >= 0 && n % channels == 0, kernel, ": ", n, " elements do not split into ", channels,
           " channels of equal size");
}

/// Calls fn(Signed, Asymmetric, Round, Container*) with std::bool_constant flags and a null pointer
/// of the code container type, so kernels are instantiated per format with no per-element branch.
template <typename Fn>
void dispatch_quant_format(QuantFormat f, Fn&& fn) {
  auto with_container = [&](auto is_signed, auto asymmetric, auto round) {
    if (f.bits <= 8) {
      fn(is_signed, asymmetric, round, static_cast<uint8_t*>(nullptr));
    } else {
      fn(is_signed, asymmetric, round, static_cast<uint16_t*>(nullptr));
    }
  };
  auto with_round = [&](auto is_signed, auto asymmetric) {
    if (f.round) {
      with_container(is_signed, asymmetric, std::true_type{});
    } else {
      with_container(is_signed, asymmetric, std::false_type{});
    }
  };
  auto with_asymmetric = [&](auto is_signed) {
    if (f.asymmetric) {
      with_round(is_signed, std::true_type{});
    } else {
      with_round(is_signed, std::false_type{});
    }
  };
  if (f.is_signed) {
    with_asymmetric(std::true_type{});
  } else {
    with_asymmetric(std::false_type{});
  }
}

}  // namespace bitrobust::kernels
