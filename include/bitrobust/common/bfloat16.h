#pragma once
// bfloat16 values as the plain C++ kernels hold them: the 16 upper bits of a float32, in a
// uint16_t (c10::BFloat16's layout, so a bf16 tensor's data_ptr can be read as uint16_t).
//
// Widening is exact. Narrowing rounds to nearest, ties to even, as c10::BFloat16 does when a float
// is converted (round_to_nearest_even), so a kernel that computes in float and narrows once gives
// what ATen gives for the same float; NaN becomes the quiet NaN 0x7FC0 (ATen's vectorized
// conversion writes 0xFFFF instead: NaN either way). Torch-free, for the kernel libraries.
#include <cstdint>
#include <cstring>

namespace bitrobust {

inline float bf16_to_float(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof value);
  return value;
}

inline uint16_t float_to_bf16(float value) {
  if (value != value) return 0x7FC0;
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  // Adding 0x7FFF, plus one when the kept part is odd, carries into it exactly when the dropped
  // half is above one half, or equal to it with an odd kept part. An overflow gives infinity.
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

}  // namespace bitrobust
