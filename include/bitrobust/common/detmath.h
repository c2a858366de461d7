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

/// Natural logarithm, bit-identical on host and device. Relative error below 2e-16 for positive
/// finite x (subnormals included). det_log(0) = -inf, det_log(+inf) = +inf, NaN for x < 0 or NaN.
///
/// x = 2^e * m with m in [sqrt(1/2), sqrt(2)) (exponent and mantissa taken from the bits), then
/// log(m) = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...) with s = (m - 1)/(m + 1), |s| <= 0.1716, so
/// s^2 <= 0.0295 and 12 terms leave a truncation error below 1e-18 relative. m - 1 is exact
/// (Sterbenz), so there is no cancellation near x = 1. ln 2 is split into a high part with 32
/// significant bits (e * ln2_hi is exact for |e| <= 1100) and a low correction.
BR_HOST_DEVICE double det_log(double x) {
  constexpr double kLn2Hi = 6.93147180369123816490e-01;  // 0x3FE62E42FEE00000
  constexpr double kLn2Lo = 1.90821492927058770002e-10;  // ln 2 - kLn2Hi
  constexpr double kSqrtHalf = 0.70710678118654752440;
  constexpr double kTwo54 = 18014398509481984.0;

  if (!(x > 0.0)) {
    return detail::bits_double(x == 0.0 ? 0xFFF0000000000000ull    // -inf
                                        : 0x7FF8000000000000ull);  // NaN
  }
  uint64_t bits = detail::double_bits(x);
  int exponent_adjust = 0;
  if ((bits >> 52) == 0) {  // subnormal: scale into the normal range (exact)
    x *= kTwo54;
    bits = detail::double_bits(x);
    exponent_adjust = -54;
  }
  const int biased = static_cast<int>(bits >> 52) & 0x7ff;
  if (biased == 0x7ff) return x;  // +inf (NaN was handled above)
  int e = biased - 1023 + exponent_adjust;
  // Mantissa m in [1, 2): same fraction bits, exponent field of 1.0.
  double m = detail::bits_double((bits & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull);
  if (m >= 2.0 * kSqrtHalf) {  // move m into [sqrt(1/2), sqrt(2)): halving is exact
    m *= 0.5;
    e += 1;
  }
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
  const double de = static_cast<double>(e);
  return de * kLn2Hi + (log_m + de * kLn2Lo);
}

}  // namespace bitrobust
