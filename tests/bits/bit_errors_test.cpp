// Torch-facing bit error injection: error models by name, validation, single and model-level
// injection with a parameter selector, and CPU/CUDA bit-identity where CUDA exists. The statistical
// properties of the patterns are tested on the kernels (tests/kernels/bit_errors_test.cpp).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <string>

#include "bitrobust/bits/bit_errors.h"
#include "bitrobust/bits/bitops.h"
#include "bitrobust/common/error.h"
#include "bitrobust/config.h"
#include "test_util.h"

namespace bitrobust::bits {
namespace {

using test_util::error_of;
using test_util::random_codes;

TEST(ErrorModel, ParsesNamesAndRoundTrips) {
  const ErrorModel random = ErrorModel::parse("random", 0.01);
  EXPECT_EQ(random.kind, ErrorKind::Random);
  EXPECT_EQ(random.rate, 0.01);
  EXPECT_EQ(random.to_string(), "random(p=0.01)");
  EXPECT_EQ(ErrorModel::parse("lsb3", 0.001).lsb_bits, 3);
  EXPECT_EQ(ErrorModel::parse("lsb3", 0.001).to_string(), "lsb3(p=0.001)");
  EXPECT_EQ(ErrorModel::parse("msb", 0.5).kind, ErrorKind::Msb);
  EXPECT_EQ(ErrorModel::parse("stuck0", 0.1).kind, ErrorKind::StuckAt0);
  // The README's spelling; every spelling has one canonical name, which the results record.
  EXPECT_EQ(ErrorModel::parse("stuck-at-0", 0.1).name(), "stuck_at_0");
  EXPECT_EQ(ErrorModel::parse("stuck1", 0.1).name(), "stuck_at_1");
  EXPECT_EQ(ErrorModel::parse("stuck_at_1", 0.1).kind, ErrorKind::StuckAt1);
  const ErrorModel asym = ErrorModel::parse("random,0to1=0.02", 0.005);
  EXPECT_EQ(asym.effective_rate_0to1(), 0.02);
  EXPECT_EQ(asym.effective_rate_1to0(), 0.005);
  EXPECT_EQ(asym.to_string(), "random(p01=0.02, p10=0.005)");
  for (const char* name : {"random", "msb", "lsb2", "stuck_at_0", "stuck_at_1", "random,0to1=0.25,1to0=0.125",
                           "msb,1to0=0.001"}) {
    const ErrorModel model = ErrorModel::parse(name, 0.0625);
    EXPECT_EQ(model.name(), name);
    EXPECT_EQ(ErrorModel::parse(model.name(), model.rate), model);
  }
  EXPECT_EQ(ErrorModel::parse("stuck_at_0", 0.3).effective_rate_0to1(), 0.0);
  EXPECT_EQ(ErrorModel::parse("stuck_at_0", 0.3).effective_rate_1to0(), 0.3);
}

// Rate 0 is error-free only when no direction has a rate of its own.
TEST(ErrorModel, HasErrorsUnlessBothDirectionsAreZero) {
  EXPECT_FALSE(ErrorModel::parse("random", 0.0).has_errors());
  EXPECT_FALSE(ErrorModel::parse("stuck_at_1", 0.0).has_errors());
  EXPECT_TRUE(ErrorModel::parse("random,0to1=0.02", 0.0).has_errors());
  EXPECT_TRUE(ErrorModel::parse("msb", 1e-6).has_errors());
  EXPECT_FALSE(ErrorModel::parse("random,0to1=0,1to0=0", 0.5).has_errors());
}

TEST(ErrorModel, RejectsBadNamesAndRates) {
  EXPECT_ERROR_CONTAINS(ErrorModel::parse("gaussian", 0.1), "unknown error model 'gaussian'");
  EXPECT_ERROR_CONTAINS(ErrorModel::parse("lsb", 0.1), "unknown error model");
  EXPECT_ERROR_CONTAINS(ErrorModel::parse("lsb0", 0.1), "1 <= k <= 32");
  EXPECT_ERROR_CONTAINS(ErrorModel::parse("random", -0.1), "rate must be in [0, 1], got -0.1");
  EXPECT_ERROR_CONTAINS(ErrorModel::parse("random", 1.5), "rate must be in [0, 1], got 1.5");
  EXPECT_ERROR_CONTAINS(ErrorModel::parse("random", std::nan("")), "rate must be in [0, 1]");
  EXPECT_ERROR_CONTAINS(ErrorModel::parse("random,0to1=2", 0.1), "0to1 in 'random,0to1=2': bit error rate 2 is outside [0, 1]");
  EXPECT_ERROR_CONTAINS(ErrorModel::parse("random,0to1=-1", 0.1), "bit error rate -1 is outside [0, 1]");
  // The rates are read as --rates reads them: percentages, no silent underflow to 0, no -0.
  EXPECT_EQ(ErrorModel::parse("random,0to1=1%,1to0=0.5%", 0.1).rate_0to1, 0.01);
  EXPECT_EQ(ErrorModel::parse("random,0to1=1%,1to0=0.5%", 0.1).rate_1to0, 0.005);
  EXPECT_ERROR_CONTAINS(ErrorModel::parse("random,0to1=1e-400", 0.1), "too small or too large to represent");
  EXPECT_FALSE(std::signbit(ErrorModel::parse("random,1to0=-0", 0.1).rate_1to0));
  EXPECT_FALSE(std::signbit(parse_rate("-0", "--rates")));
  // A percentage is the same double as its fraction written out (0.7 / 100 is one ulp below 0.007).
  for (const auto& [percent, fraction] : std::vector<std::pair<std::string, double>>{
           {"0.7%", 0.007}, {"0.07%", 0.0007}, {"0.35%", 0.0035}, {"0.9%", 0.009}, {"1%", 0.01}, {"2.5%", 0.025},
           {"1e-1%", 0.001}, {"1.5E-3%", 1.5e-5}, {".5%", 0.005}, {"100%", 1.0}, {"0e999999999999999999999%", 0.0}, {"0e-9223372036854775808%", 0.0}}) {
    EXPECT_EQ(parse_rate(percent, "--rates"), fraction) << percent;
  }
  EXPECT_ERROR_CONTAINS(ErrorModel::parse("random,sideways=0.1", 0.1), "unknown option 'sideways=0.1'");
  EXPECT_ERROR_CONTAINS(ErrorModel::parse("random,", 0.1), "ends with a comma");
  EXPECT_ERROR_CONTAINS(ErrorModel::parse("random,0to1=0.5,0to1=0.2", 0.1), "0to1 is given twice");
  EXPECT_ERROR_CONTAINS(ErrorModel::parse("random,0to1=abc", 0.1), "'abc' is not a number");
  EXPECT_ERROR_CONTAINS(ErrorModel::parse("stuck_at_0,0to1=0.1", 0.1), "single rate");
  ErrorModel direct;
  direct.rate = 2.0;
  EXPECT_ERROR_CONTAINS(direct.validate(), "rate must be in [0, 1], got 2");
  EXPECT_ERROR_CONTAINS(ErrorModel::parse("lsb5", 0.1).kernel_params(4, 8), "needs at least 5 bits, codes have 4");
  EXPECT_ERROR_CONTAINS(ErrorModel::parse("random", 0.1).kernel_params(9, 8), "code width must be in [1, 8]");
}

TEST(InjectBitErrors, ChangesOnlyTheMBitsAndCountsChanges) {
  // 4-bit codes in uint8 with garbage above bit 3: errors never touch bits 4..7.
  const at::Tensor clean = at::bitwise_or(random_codes({64, 3, 3, 3}, 4, at::kByte, 1), 0xA0);
  at::Tensor out = at::empty_like(clean);
  const int64_t changed = inject_bit_errors(clean, 4, ErrorModel::parse("random", 0.2), 7, 3, out);
  EXPECT_EQ(changed, hamming_distance_total(clean, out));
  EXPECT_GT(changed, 0);
  EXPECT_TRUE(at::equal(at::bitwise_and(out, 0xF0), at::bitwise_and(clean, 0xF0)));
  // Same call, same result; in place gives the same too.
  at::Tensor again = at::empty_like(clean);
  EXPECT_EQ(inject_bit_errors(clean, 4, ErrorModel::parse("random", 0.2), 7, 3, again), changed);
  EXPECT_TRUE(at::equal(out, again));
  at::Tensor in_place = clean.clone();
  EXPECT_EQ(inject_bit_errors(in_place, 4, ErrorModel::parse("random", 0.2), 7, 3, in_place), changed);
  EXPECT_TRUE(at::equal(in_place, out));
  // Rate 0 copies.
  EXPECT_EQ(inject_bit_errors(clean, 4, ErrorModel::parse("random", 0.0), 7, 3, out), 0);
  EXPECT_TRUE(at::equal(out, clean));
}

TEST(InjectBitErrors, SixteenBitCodesInInt16AndRestrictions) {
  const at::Tensor clean = random_codes({1000, 10}, 12, at::kShort, 2);
  at::Tensor out = at::empty_like(clean);
  inject_bit_errors(clean, 12, ErrorModel::parse("msb", 0.3), 5, 0, out);
  const at::Tensor diff = at::bitwise_xor(clean, out);
  EXPECT_TRUE(at::equal(at::bitwise_and(diff, ~(1 << 11)), at::zeros_like(diff)));  // only bit 11
  EXPECT_GT(diff.ne(0).sum().item<int64_t>(), 0);
  inject_bit_errors(clean, 12, ErrorModel::parse("lsb2", 0.3), 5, 0, out);
  EXPECT_TRUE(at::equal(at::bitwise_and(at::bitwise_xor(clean, out), ~3), at::zeros_like(diff)));
  // 16-bit codes: all bit patterns of int16, negative values included.
  const at::Tensor full = random_codes({5000}, 16, at::kInt, 3).to(at::kShort);
  at::Tensor full_out = at::empty_like(full);
  EXPECT_EQ(inject_bit_errors(full, 16, ErrorModel::parse("random", 1.0), 5, 0, full_out), 16 * 5000);
  EXPECT_TRUE(at::equal(full_out, at::bitwise_not(full)));
}

TEST(InjectBitErrors, StuckAtAndAsymmetricModels) {
  const at::Tensor clean = random_codes({20000}, 8, at::kByte, 4);
  at::Tensor selected = at::empty_like(clean), stuck0 = at::empty_like(clean), stuck1 = at::empty_like(clean);
  const at::Tensor zeros = at::zeros_like(clean);
  inject_bit_errors(zeros, 8, ErrorModel::parse("random", 0.05), 9, 1, selected);
  inject_bit_errors(clean, 8, ErrorModel::parse("stuck_at_0", 0.05), 9, 1, stuck0);
  inject_bit_errors(clean, 8, ErrorModel::parse("stuck_at_1", 0.05), 9, 1, stuck1);
  EXPECT_TRUE(at::equal(stuck0, at::bitwise_and(clean, at::bitwise_not(selected))));
  EXPECT_TRUE(at::equal(stuck1, at::bitwise_or(clean, selected)));
  // Only 0->1 errors: no bit goes from 1 to 0.
  at::Tensor up = at::empty_like(clean);
  inject_bit_errors(clean, 8, ErrorModel::parse("random,0to1=0.1,1to0=0", 0.0), 9, 1, up);
  EXPECT_TRUE(at::equal(at::bitwise_and(clean, up), clean));
  EXPECT_GT(hamming_distance_total(clean, up), 0);
}

TEST(InjectBitErrors, MismatchedTensorsGiveClearErrors) {
  const at::Tensor clean = at::zeros({4, 4}, at::kByte);
  const ErrorModel model = ErrorModel::parse("random", 0.1);
  at::Tensor wrong_dtype = at::zeros({4, 4}, at::kShort), wrong_shape = at::zeros({16}, at::kByte);
  at::Tensor non_contiguous = at::zeros({4, 4}, at::kByte).t(), ok = at::zeros({4, 4}, at::kByte);
  at::Tensor floats = at::zeros({4, 4}, at::kFloat), undefined;
  EXPECT_ERROR_CONTAINS(inject_bit_errors(clean, 8, model, 1, 0, wrong_dtype),
                        "dtypes differ: clean codes is Byte, out is Short");
  EXPECT_ERROR_CONTAINS(inject_bit_errors(clean, 8, model, 1, 0, wrong_shape), "shapes differ: clean codes is [4, 4], out is [16]");
  EXPECT_ERROR_CONTAINS(inject_bit_errors(clean, 8, model, 1, 0, non_contiguous), "must be contiguous");
  EXPECT_ERROR_CONTAINS(inject_bit_errors(clean, 9, model, 1, 0, ok), "code width must be in [1, 8]");
  EXPECT_ERROR_CONTAINS(inject_bit_errors(floats, 8, model, 1, 0, floats), "has dtype Float");
  EXPECT_ERROR_CONTAINS(inject_bit_errors(clean, 8, model, 1, 0, undefined), "out is an undefined tensor");
  EXPECT_ERROR_CONTAINS(inject_bit_errors(clean, 8, model, 1, -1, ok), "param_index must be >= 0");
  ErrorModel bad = model;
  bad.rate = -0.5;
  EXPECT_ERROR_CONTAINS(inject_bit_errors(clean, 8, bad, 1, 0, ok), "rate must be in [0, 1], got -0.5");
}

std::vector<CodeTensor> small_model(uint64_t seed) {
  std::vector<CodeTensor> tensors;
  const std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {
      {"conv1.weight", {16, 3, 3, 3}}, {"conv1.bias", {16}}, {"norm1.weight", {16}}, {"fc.weight", {10, 64}}};
  for (size_t i = 0; i < shapes.size(); ++i) {
    CodeTensor t;
    t.name = shapes[i].first;
    t.bits = i == 3 ? 12 : 8;
    t.clean = random_codes(shapes[i].second, t.bits, t.bits > 8 ? at::kShort : at::kByte, seed + i);
    t.out = at::empty_like(t.clean);
    t.param_index = static_cast<int64_t>(i);
    tensors.push_back(t);
  }
  return tensors;
}

TEST(InjectBitErrors, ModelLevelInjectionMatchesPerTensorAndHonoursSelector) {
  const ErrorModel model = ErrorModel::parse("random", 0.05);
  auto tensors = small_model(10);
  const int64_t total = inject_bit_errors(tensors, model, 123);
  int64_t sum = 0;
  for (const auto& t : tensors) {
    at::Tensor single = at::empty_like(t.clean);
    sum += inject_bit_errors(t.clean, t.bits, model, 123, t.param_index, single);
    EXPECT_TRUE(at::equal(single, t.out)) << t.name;
  }
  EXPECT_EQ(total, sum);
  // Only weights: biases and others keep their clean codes; weights get the very same errors.
  auto selected = small_model(10);
  const int64_t weights_only = inject_bit_errors(selected, model, 123, ParamSelector("\\.weight$"));
  int64_t expected = 0;
  for (size_t i = 0; i < selected.size(); ++i) {
    const bool is_weight = selected[i].name.find(".weight") != std::string::npos;
    EXPECT_TRUE(at::equal(selected[i].out, is_weight ? tensors[i].out : selected[i].clean)) << selected[i].name;
    if (is_weight) expected += hamming_distance_total(selected[i].clean, selected[i].out);
  }
  EXPECT_EQ(weights_only, expected);
  // The variant that does not count (no device synchronisation) draws the same pattern.
  auto uncounted = small_model(10);
  inject_bit_errors_async(uncounted, model, 123, ParamSelector("\\.weight$"));
  for (size_t i = 0; i < uncounted.size(); ++i) EXPECT_TRUE(at::equal(uncounted[i].out, selected[i].out));
  EXPECT_TRUE(ParamSelector().selects("anything"));
  EXPECT_TRUE(ParamSelector("conv").selects("conv1.weight"));
  EXPECT_FALSE(ParamSelector("^fc").selects("conv1.weight"));
  EXPECT_ERROR_CONTAINS(ParamSelector("conv[("), "--layers: invalid regular expression 'conv[('");
  // NOTE [Name regexes]: `pattern --layers '(.*.*.*.*)*z'` ran past any time limit with std::regex.
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(ParamSelector("(.*.*.*.*)*z").selects("features.10.conv.weight.aaaaaaaaaaaaaaaa"));
  EXPECT_TRUE(ParamSelector("(.*.*.*.*)*z").selects("features.10.conv.weight.z"));
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1.0);
  EXPECT_TRUE(ParamSelector("^(conv1|fc)\\.weight$").selects("fc.weight"));
  EXPECT_FALSE(ParamSelector("^(conv1|fc)\\.weight$").selects("fc.bias"));
}

#ifdef BITROBUST_WITH_CUDA
TEST(InjectBitErrorsCuda, BitIdenticalToCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const std::vector<std::string> names = {"random", "msb", "lsb3", "stuck_at_0", "stuck_at_1",
                                          "random,0to1=0.2,1to0=0.01"};
  for (const auto& name : names) {
    for (double p : {1e-4, 1e-2, 0.3}) {
      const ErrorModel model = ErrorModel::parse(name, p);
      for (int bits : {4, 8, 12, 24}) {
        const at::ScalarType dtype = bits > 16 ? at::kInt : (bits > 8 ? at::kShort : at::kByte);
        const at::Tensor clean = random_codes({100003}, bits, dtype, bits);
        at::Tensor cpu_out = at::empty_like(clean);
        const int64_t cpu_count = inject_bit_errors(clean, bits, model, 77, 5, cpu_out);
        const at::Tensor gpu_clean = clean.cuda();
        at::Tensor gpu_out = at::empty_like(gpu_clean);
        const int64_t gpu_count = inject_bit_errors(gpu_clean, bits, model, 77, 5, gpu_out);
        EXPECT_EQ(cpu_count, gpu_count) << name << " p=" << p << " bits=" << bits;
        EXPECT_TRUE(at::equal(cpu_out, gpu_out.cpu())) << name << " p=" << p << " bits=" << bits;
      }
    }
  }
  // Model level, with a selector, on many tensors (more than one launch batch).
  std::vector<CodeTensor> cpu_tensors, gpu_tensors;
  for (int i = 0; i < 60; ++i) {
    CodeTensor t;
    t.name = "layer" + std::to_string(i) + (i % 3 ? ".weight" : ".bias");
    t.bits = 4 + i % 10;
    t.clean = random_codes({1000 + 37 * i}, t.bits, t.bits > 8 ? at::kShort : at::kByte, 100 + i);
    t.out = at::empty_like(t.clean);
    t.param_index = i;
    cpu_tensors.push_back(t);
    t.clean = t.clean.cuda();
    t.out = at::empty_like(t.clean);
    gpu_tensors.push_back(t);
  }
  const ErrorModel model = ErrorModel::parse("random", 0.01);
  EXPECT_EQ(inject_bit_errors(cpu_tensors, model, 5, ParamSelector("weight")),
            inject_bit_errors(gpu_tensors, model, 5, ParamSelector("weight")));
  for (size_t i = 0; i < cpu_tensors.size(); ++i) {
    EXPECT_TRUE(at::equal(cpu_tensors[i].out, gpu_tensors[i].out.cpu())) << cpu_tensors[i].name;
  }
  for (auto& t : gpu_tensors) t.out.zero_();
  inject_bit_errors_async(gpu_tensors, model, 5, ParamSelector("weight"));
  for (size_t i = 0; i < cpu_tensors.size(); ++i) {
    EXPECT_TRUE(at::equal(cpu_tensors[i].out, gpu_tensors[i].out.cpu())) << cpu_tensors[i].name;
  }
}
#endif

}  // namespace
}  // namespace bitrobust::bits
