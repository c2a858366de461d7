#pragma once
// NOTE [Deterministic math]: random bit error patterns must be bit-identical on the CPU and on CUDA
// (see NOTE [Bit error sampling] in bitrobust/bits/bit_error_sampler.h). The libraries' log() differ
// in their last bits between glibc and CUDA's libdevice, so the functions here use only IEEE +, -,
// *, / (correctly rounded on both sides) and integer manipulation of the representation. This holds
// only while the compilers do not fuse multiply-adds: the kernels are built with -ffp-contract=off
// (CPU) and --fmad=false (CUDA); see NOTE [Deterministic floating point] in CMakeLists.txt.
#include <cstdint>
#include <cstring>

#include "bitrobust/common/philox.h"  // BR_HOST_DEVICE

namespace bitrobust {

namespace detail {
BR_HOST_DEVICE uint64_t double_bits(double x) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(__double_as_longlong(x));
#else
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
#endif
}

BR_HOST_DEVICE double bits_double(uint64_t bits) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(bits));
#else
  double x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
#endif
}
}  // namespace detail

namespace detail {
/// log(x * 2^exponent_adjust) for positive normal finite x, without branches; see det_log_normal.
///
/// x = 2^e * m with m in [sqrt(1/2), sqrt(2)) (exponent and mantissa taken from the bits), then
/// log(m) = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...) with s = (m - 1)/(m + 1), |s| <= 0.1716, so
/// s^2 <= 0.0295 and 12 terms leave a truncation error below 1e-18 relative. m - 1 is exact
/// (Sterbenz), so there is no cancellation near x = 1. ln 2 is split into a high part with 32
/// significant bits (e * ln2_hi is exact for |e| <= 1100) and a low correction.
BR_HOST_DEVICE double det_log_core(double x, double exponent_adjust) {
  constexpr double kLn2Hi = 6.93147180369123816490e-01;  // 0x3FE62E42FEE00000
  constexpr double kLn2Lo = 1.90821492927058770002e-10;  // ln 2 - kLn2Hi
  // Fraction bits of sqrt(2) rounded to double (= 2 * 0.70710678118654752440, the bound det_log has
  // always used).
  constexpr uint64_t kSqrtTwoFraction = 0x6A09E667F3BCDull;
  constexpr double kTwo52 = 4503599627370496.0;
  const uint64_t bits = double_bits(x);
  // x = 2^(biased - 1023) * 1.fraction; when 1.fraction >= sqrt(2) take m = 1.fraction / 2 (exact)
  // and one more in the exponent, so that m lies in [sqrt(1/2), sqrt(2)). For m in [1, 2) comparing
  // fraction fields as integers is comparing m. All of it is integer work on the representation,
  // which a compiler runs in SIMD lanes: a floating-point compare or select (which may trap) would
  // stay a branch.
  const uint64_t fraction = bits & 0x000FFFFFFFFFFFFFull;
  const uint64_t halve = ((fraction - kSqrtTwoFraction) >> 63) ^ 1u;  // 1 iff fraction >= sqrt(2)'s
  const double m = bits_double((fraction | 0x3FF0000000000000ull) - (halve << 52));
  // The exponent as a double without an int64 -> double conversion (which SIMD units before
  // AVX-512 lack): 2^52 + k is the double with k in its low bits. All exact.
  const double e = (bits_double(0x4330000000000000ull | ((bits >> 52) + halve)) - kTwo52) - 1023.0 + exponent_adjust;
  const double s = (m - 1.0) / (m + 1.0);
  const double s2 = s * s;
  // 1/(2k+1) for k = 0..12, folded at compile time (correctly rounded constants on both sides).
  double poly = 1.0 / 25.0;
  poly = poly * s2 + 1.0 / 23.0;
  poly = poly * s2 + 1.0 / 21.0;
  poly = poly * s2 + 1.0 / 19.0;
  poly = poly * s2 + 1.0 / 17.0;
  poly = poly * s2 + 1.0 / 15.0;
  poly = poly * s2 + 1.0 / 13.0;
  poly = poly * s2 + 1.0 / 11.0;
  poly = poly * s2 + 1.0 / 9.0;
  poly = poly * s2 + 1.0 / 7.0;
  poly = poly * s2 + 1.0 / 5.0;
  poly = poly * s2 + 1.0 / 3.0;
  // log(m) = 2 s + 2 s^3 * poly: the leading term kept separate for accuracy.
  const double two_s = 2.0 * s;
  const double log_m = two_s + two_s * (s2 * poly);
  return e * kLn2Hi + (log_m + e * kLn2Lo);
}
}  // namespace detail

/// det_log for positive normal finite x (DBL_MIN <= x <= DBL_MAX), without branches, so that a
/// loop over an array of inputs runs in SIMD lanes (the sampler's spacings, NOTE [Bit error
/// sampling]). det_log uses the same code, so the two agree bit for bit.
BR_HOST_DEVICE double det_log_normal(double x) { return detail::det_log_core(x, 0.0); }

/// Natural logarithm, bit-identical on host and device. Relative error below 2e-16 for positive
/// finite x (subnormals included). det_log(0) = -inf, det_log(+inf) = +inf, NaN for x < 0 or NaN.
BR_HOST_DEVICE double det_log(double x) {
  constexpr double kTwo54 = 18014398509481984.0;
  if (!(x > 0.0)) {
    return detail::bits_double(x == 0.0 ? 0xFFF0000000000000ull    // -inf
                                        : 0x7FF8000000000000ull);  // NaN
  }
  const uint64_t biased = detail::double_bits(x) >> 52;
  if (biased == 0x7ff) return x;  // +inf (NaN was handled above)
  // A subnormal is scaled into the normal range (exact) and the scale taken off the exponent.
  return biased != 0 ? detail::det_log_core(x, 0.0) : detail::det_log_core(x * kTwo54, -54.0);
}

}  // namespace bitrobust
