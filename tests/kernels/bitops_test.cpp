// Bit operation kernels against scalar references on random data, for 1-, 2- and 4-byte elements,
// on sizes below and above the OpenMP threshold.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "bitrobust/bits/bitops_kernels.h"

namespace bitrobust::bits {
namespace {

uint32_t reference_highest_bit(uint32_t x) {
  uint32_t result = 0;
  for (int b = 0; b < 32; ++b) {
    if (x & (1u << b)) result = 1u << b;
  }
  return result;
}

int reference_popcount(uint32_t x) {
  int count = 0;
  for (int b = 0; b < 32; ++b) count += (x >> b) & 1u;
  return count;
}

template <typename T>
std::vector<T> random_values(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<T> v(n);
  for (auto& x : v) {
    // Mix sparse, dense and equal-ish values so every operation sees zeros and full words.
    const uint64_t r = rng();
    x = static_cast<T>((r & 3) == 0 ? 0 : ((r & 3) == 1 ? ~uint64_t{0} : rng()));
  }
  return v;
}

template <typename T>
void check_all_ops(int64_t n, uint64_t seed) {
  const auto a = random_values<T>(n, seed);
  auto b = random_values<T>(n, seed + 1);
  for (int64_t i = 0; i < n; i += 5) b[i] = a[i];  // some equal pairs
  const int eb = sizeof(T);
  std::vector<T> out(n);
  const struct {
    BitBinaryOp op;
    T (*ref)(T, T);
  } cases[] = {
      {BitBinaryOp::And, [](T x, T y) { return static_cast<T>(x & y); }},
      {BitBinaryOp::Or, [](T x, T y) { return static_cast<T>(x | y); }},
      {BitBinaryOp::Xor, [](T x, T y) { return static_cast<T>(x ^ y); }},
      {BitBinaryOp::AndNot, [](T x, T y) { return static_cast<T>(x & ~y); }},
      {BitBinaryOp::MsbDiff, [](T x, T y) { return static_cast<T>(reference_highest_bit(static_cast<T>(x ^ y))); }},
  };
  for (const auto& c : cases) {
    bitops_binary_cpu(c.op, a.data(), b.data(), out.data(), n, eb);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(out[i], c.ref(a[i], b[i])) << "op " << static_cast<int>(c.op) << " elem_bytes " << eb << " i " << i;
    }
  }
  bitops_not_cpu(a.data(), out.data(), n, eb);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(out[i], static_cast<T>(~a[i]));

  std::vector<uint8_t> counts(n);
  bitops_popcount_cpu(a.data(), counts.data(), n, eb);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(counts[i], reference_popcount(a[i])) << i;
  bitops_hamming_cpu(a.data(), b.data(), counts.data(), n, eb);
  int64_t total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int d = reference_popcount(static_cast<T>(a[i] ^ b[i]));
    ASSERT_EQ(counts[i], d) << i;
    total += d;
  }
  EXPECT_EQ(bitops_hamming_total_cpu(a.data(), b.data(), n, eb), total);

  for (int bits : {1, 3, 8 * eb}) {
    std::vector<uint8_t> extracted(n * bits, 7);
    bitops_extract_cpu(a.data(), extracted.data(), n, eb, bits);
    for (int64_t i = 0; i < n; ++i) {
      for (int k = 0; k < bits; ++k) ASSERT_EQ(extracted[i * bits + k], (a[i] >> k) & 1u) << i << " bit " << k;
    }
  }
}

TEST(BitopsKernel, Uint8MatchesReference) {
  check_all_ops<uint8_t>(1001, 1);
  check_all_ops<uint8_t>(200003, 2);
}
TEST(BitopsKernel, Uint16MatchesReference) {
  check_all_ops<uint16_t>(999, 3);
  check_all_ops<uint16_t>(150001, 4);
}
TEST(BitopsKernel, Uint32MatchesReference) {
  check_all_ops<uint32_t>(1003, 5);
  check_all_ops<uint32_t>(100003, 6);
}

TEST(BitopsKernel, EmptyInputsAndBadArguments) {
  EXPECT_EQ(bitops_hamming_total_cpu(nullptr, nullptr, 0, 1), 0);
  bitops_binary_cpu(BitBinaryOp::Xor, nullptr, nullptr, nullptr, 0, 2);
  uint8_t x = 0, y = 0;
  EXPECT_THROW(bitops_binary_cpu(BitBinaryOp::Xor, &x, &y, &x, 1, 3), std::invalid_argument);
  EXPECT_THROW(bitops_extract_cpu(&x, &y, 1, 1, 9), std::invalid_argument);
}

TEST(BitopsKernel, MsbDiffExamples) {
  const uint8_t a[] = {0b1011'0000, 0x00, 0xFF, 0x12};
  const uint8_t b[] = {0b1001'1111, 0x00, 0x7F, 0x13};
  uint8_t out[4];
  bitops_binary_cpu(BitBinaryOp::MsbDiff, a, b, out, 4, 1);
  EXPECT_EQ(out[0], 0b0010'0000);
  EXPECT_EQ(out[1], 0);
  EXPECT_EQ(out[2], 0x80);
  EXPECT_EQ(out[3], 0x01);
}

}  // namespace
}  // namespace bitrobust::bits
