// The kernels' bf16 conversions (bitrobust/common/bfloat16.h) against c10::BFloat16, whose
// values bf16 tensors hold: widening exact for every bf16 value, narrowing c10's rounding.
#include <gtest/gtest.h>

#include <c10/util/BFloat16.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "bitrobust/common/bfloat16.h"
#include "bitrobust/common/philox.h"

namespace bitrobust {
namespace {

float from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

uint32_t bits_of(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

TEST(BFloat16, WideningIsExactForEveryValue) {
  for (uint32_t b = 0; b <= 0xFFFF; ++b) {
    c10::BFloat16 c10_value;
    c10_value.x = static_cast<uint16_t>(b);
    const float ours = bf16_to_float(static_cast<uint16_t>(b)), theirs = static_cast<float>(c10_value);
    if (std::isnan(theirs)) {
      ASSERT_TRUE(std::isnan(ours)) << std::hex << b;
    } else {
      ASSERT_EQ(bits_of(ours), bits_of(theirs)) << std::hex << b;
    }
    // And narrowing a widened value gives it back (NaN: a NaN).
    if (!std::isnan(ours)) ASSERT_EQ(float_to_bf16(ours), b) << std::hex << b;
  }
}

TEST(BFloat16, NarrowingRoundsAsC10ToNearestEven) {
  std::vector<float> values = {0.0f, -0.0f, 1.0f, -1.0f, std::numeric_limits<float>::infinity(),
                               -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::max(),
                               std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::min()};
  // Ties: exactly half a bf16 unit above an even and an odd kept part, and just either side of it.
  for (const uint32_t kept : {0x3F800000u, 0x3F810000u, 0x7F7F0000u, 0x00010000u, 0xBF810000u}) {
    for (const uint32_t dropped : {0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu, 0x0001u}) values.push_back(from_bits(kept | dropped));
  }
  PhiloxStream rng(2026, 12);
  for (int i = 0; i < 1 << 20; ++i) {
    values.push_back(from_bits(rng.next_u32()));
  }
  for (const float v : values) {
    const uint16_t ours = float_to_bf16(v), theirs = c10::BFloat16(v).x;
    if (std::isnan(v)) {
      ASSERT_EQ(ours, 0x7FC0) << std::hex << bits_of(v);
    } else {
      ASSERT_EQ(ours, theirs) << std::hex << bits_of(v);
    }
  }
  EXPECT_EQ(float_to_bf16(from_bits(0x7F7FFFFFu)), 0x7F80) << "the largest float rounds to infinity";
  EXPECT_EQ(float_to_bf16(from_bits(0x3F808000u)), 0x3F80) << "a tie goes to the even kept part";
  EXPECT_EQ(float_to_bf16(from_bits(0x3F818000u)), 0x3F82);
}

}  // namespace
}  // namespace bitrobust
