// Torch-facing bit operations: results against Torch's own bitwise ops and scalar references, for
// every supported dtype; error messages for mismatched inputs; CPU/CUDA identity where CUDA exists.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <string>

#include "bitrobust/bits/bitops.h"
#include "bitrobust/common/error.h"
#include "bitrobust/config.h"
#include "test_util.h"

namespace bitrobust::bits {
namespace {

const at::ScalarType kDtypes[] = {at::kByte, at::kChar, at::kShort, at::kInt};

int container_bits(at::ScalarType dtype) { return static_cast<int>(8 * at::elementSize(dtype)); }

// Uniform random bit patterns of the dtype's full width.
at::Tensor random_bits(at::IntArrayRef shape, at::ScalarType dtype, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  const int bits = container_bits(dtype);
  const at::Tensor wide = at::randint(0, int64_t{1} << std::min(bits, 31), shape, gen, at::kLong);
  if (bits == 32) {  // also set the sign bit at random
    const at::Tensor sign = at::randint(0, 2, shape, gen, at::kLong) * (int64_t{1} << 31);
    return (wide + sign).to(at::kInt);  // wraps to the int32 two's complement pattern
  }
  return wide.to(dtype);
}

uint32_t as_unsigned(int64_t value, int bits) {
  return static_cast<uint32_t>(static_cast<uint64_t>(value) & (bits == 32 ? 0xFFFFFFFFull : ((1ull << bits) - 1)));
}

TEST(Bitops, LogicalOpsMatchTorch) {
  for (auto dtype : kDtypes) {
    const at::Tensor a = random_bits({7, 33}, dtype, 1), b = random_bits({7, 33}, dtype, 2);
    EXPECT_TRUE(at::equal(bit_and(a, b), at::bitwise_and(a, b))) << dtype;
    EXPECT_TRUE(at::equal(bit_or(a, b), at::bitwise_or(a, b))) << dtype;
    EXPECT_TRUE(at::equal(bit_xor(a, b), at::bitwise_xor(a, b))) << dtype;
    EXPECT_TRUE(at::equal(bit_not(a), at::bitwise_not(a))) << dtype;
    EXPECT_TRUE(at::equal(flip_bits(a, b), at::bitwise_xor(a, b))) << dtype;
    EXPECT_TRUE(at::equal(set_bits(a, b), at::bitwise_or(a, b))) << dtype;
    EXPECT_TRUE(at::equal(clear_bits(a, b), at::bitwise_and(a, at::bitwise_not(b)))) << dtype;
    EXPECT_EQ(bit_xor(a, b).scalar_type(), dtype);
    // Non-contiguous inputs are accepted.
    EXPECT_TRUE(at::equal(bit_xor(a.t(), b.t()), at::bitwise_xor(a.t(), b.t()))) << dtype;
  }
}

TEST(Bitops, CountsAndProjectionMatchScalarReference) {
  for (auto dtype : kDtypes) {
    const int bits = container_bits(dtype);
    at::Tensor a = random_bits({1000}, dtype, 3), b = random_bits({1000}, dtype, 4);
    b.index_put_({at::indexing::Slice(0, 100)}, a.index({at::indexing::Slice(0, 100)}));  // equal pairs
    const at::Tensor pc = popcount(a), hd = hamming_distance(a, b), msb = most_significant_difference(a, b);
    EXPECT_EQ(pc.scalar_type(), at::kByte);
    EXPECT_EQ(msb.scalar_type(), dtype);
    const at::Tensor a64 = a.to(at::kLong), b64 = b.to(at::kLong), msb64 = msb.to(at::kLong);
    const auto pa = pc.accessor<uint8_t, 1>(), ph = hd.accessor<uint8_t, 1>();
    const auto va = a64.accessor<int64_t, 1>(), vb = b64.accessor<int64_t, 1>(), vm = msb64.accessor<int64_t, 1>();
    int64_t total = 0;
    for (int64_t i = 0; i < a.numel(); ++i) {
      const uint32_t x = as_unsigned(va[i], bits), y = as_unsigned(vb[i], bits);
      ASSERT_EQ(pa[i], __builtin_popcount(x)) << dtype << " " << i;
      ASSERT_EQ(ph[i], __builtin_popcount(x ^ y)) << dtype << " " << i;
      total += __builtin_popcount(x ^ y);
      uint32_t expected = 0;
      for (int k = 0; k < bits; ++k) {
        if (((x ^ y) >> k) & 1u) expected = 1u << k;
      }
      ASSERT_EQ(as_unsigned(vm[i], bits), expected) << dtype << " " << i;
    }
    EXPECT_EQ(hamming_distance_total(a, b), total) << dtype;
    EXPECT_EQ(hamming_distance_total(a, a), 0);
    // The projection (the reference's int_msb_projection): a with its highest bit differing from b
    // set as in b; one bit from a at most, none where a == b, and never further from b than a.
    const at::Tensor projected = msb_projection(a, b);
    EXPECT_EQ(projected.scalar_type(), dtype);
    EXPECT_TRUE(at::equal(projected, at::bitwise_xor(a, msb))) << dtype;
    const at::Tensor from_a = hamming_distance(a, projected).to(at::kLong);
    EXPECT_LE(from_a.max().item<int64_t>(), 1) << dtype;
    EXPECT_TRUE(at::equal(from_a, b.ne(a).to(at::kLong))) << dtype;
    EXPECT_TRUE(at::equal(projected.slice(0, 0, 100), a.slice(0, 0, 100))) << dtype;
    EXPECT_TRUE((hamming_distance(projected, b).to(at::kLong) + from_a).equal(hd.to(at::kLong))) << dtype;
  }
  // Signed containers: a differing sign bit is the highest (-1 = 0xFF against 1 = 0x01 in int8).
  const at::Tensor minus_one = at::full({1}, -1, at::kChar), one = at::full({1}, 1, at::kChar);
  EXPECT_EQ(msb_projection(minus_one, one).item<int8_t>(), 127);
  EXPECT_ERROR_CONTAINS(msb_projection(minus_one, at::full({1}, 1, at::kShort)), "msb_projection: dtypes differ");
}

TEST(Bitops, ExtractBitsIsLsbFirstAndReconstructs) {
  const at::Tensor codes = at::tensor({0b101, 0b110, 0xFF, 0}, at::kByte).reshape({2, 2});
  const at::Tensor bits = extract_bits(codes, 3);
  EXPECT_EQ(bits.sizes(), (std::vector<int64_t>{2, 2, 3}));
  EXPECT_EQ(bits.scalar_type(), at::kByte);
  EXPECT_TRUE(at::equal(bits[0][0], at::tensor({1, 0, 1}, at::kByte)));
  EXPECT_TRUE(at::equal(bits[0][1], at::tensor({0, 1, 1}, at::kByte)));
  EXPECT_TRUE(at::equal(bits[1][0], at::tensor({1, 1, 1}, at::kByte)));
  for (auto dtype : kDtypes) {
    const int m = container_bits(dtype);
    const at::Tensor a = random_bits({5, 17}, dtype, 5);
    const at::Tensor extracted = extract_bits(a, m).to(at::kLong);
    const at::Tensor weights = at::pow(2, at::arange(m, at::kLong));
    const at::Tensor rebuilt = (extracted * weights).sum(-1);
    const at::Tensor unsigned_a = at::bitwise_and(a.to(at::kLong), (int64_t{1} << m) - 1);
    EXPECT_TRUE(at::equal(rebuilt, unsigned_a)) << dtype;
  }
}

using test_util::error_of;

TEST(Bitops, MismatchedInputsGiveClearErrors) {
  const at::Tensor a = at::zeros({4}, at::kByte);
  EXPECT_NE(error_of([&] { bit_xor(a, at::zeros({4}, at::kShort)); }).find("bit_xor: dtypes differ: a is Byte, b is Short"),
            std::string::npos);
  EXPECT_NE(error_of([&] { bit_and(a, at::zeros({5}, at::kByte)); }).find("bit_and: shapes differ: a is [4], b is [5]"),
            std::string::npos);
  EXPECT_NE(error_of([&] { popcount(at::zeros({4}, at::kFloat)); }).find("popcount: a has dtype Float; expected uint8"),
            std::string::npos);
  EXPECT_NE(error_of([&] { hamming_distance(a, at::zeros({2, 2}, at::kByte)); }).find("shapes differ"), std::string::npos);
  EXPECT_NE(error_of([&] { extract_bits(a, 9); }).find("extract_bits: bits must be in [1, 8]"), std::string::npos);
  EXPECT_NE(error_of([&] { extract_bits(a, 0); }).find("bits must be in"), std::string::npos);
  EXPECT_NE(error_of([&] { bit_not(at::Tensor()); }).find("undefined"), std::string::npos);
}

#ifdef BITROBUST_WITH_CUDA
TEST(BitopsCuda, IdenticalToCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (auto dtype : kDtypes) {
    const at::Tensor a = random_bits({300001}, dtype, 6), b = random_bits({300001}, dtype, 7);
    const at::Tensor ga = a.cuda(), gb = b.cuda();
    EXPECT_TRUE(at::equal(bit_and(ga, gb).cpu(), bit_and(a, b)));
    EXPECT_TRUE(at::equal(bit_or(ga, gb).cpu(), bit_or(a, b)));
    EXPECT_TRUE(at::equal(bit_xor(ga, gb).cpu(), bit_xor(a, b)));
    EXPECT_TRUE(at::equal(bit_not(ga).cpu(), bit_not(a)));
    EXPECT_TRUE(at::equal(clear_bits(ga, gb).cpu(), clear_bits(a, b)));
    EXPECT_TRUE(at::equal(most_significant_difference(ga, gb).cpu(), most_significant_difference(a, b)));
    EXPECT_TRUE(at::equal(msb_projection(ga, gb).cpu(), msb_projection(a, b)));
    EXPECT_TRUE(at::equal(popcount(ga).cpu(), popcount(a)));
    EXPECT_TRUE(at::equal(hamming_distance(ga, gb).cpu(), hamming_distance(a, b)));
    EXPECT_EQ(hamming_distance_total(ga, gb), hamming_distance_total(a, b));
    EXPECT_TRUE(at::equal(extract_bits(ga, 5).cpu(), extract_bits(a, 5)));
  }
  EXPECT_NE(error_of([&] { bit_xor(at::zeros({4}, at::kByte), at::zeros({4}, at::kByte).cuda()); }).find("devices differ"),
            std::string::npos);
}
#endif

}  // namespace
}  // namespace bitrobust::bits
