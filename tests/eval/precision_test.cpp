#include "bitrobust/eval/precision.h"

#include <ATen/Context.h>
#include <gtest/gtest.h>

#include "bitrobust/eval/bit_error_eval.h"
#include "test_util.h"
#include "model_fixtures.h"

using namespace bitrobust;

namespace {
eval::SweepOptions sweep_options() { return test_util::quiet_sweep_options({0.05, 0.2}, 20); }
}  // namespace

TEST(Precision, ParsesTheThreeNamesAndNothingElse) {
  for (const char* name : {"fp32", "tf32", "bf16"}) {
    EXPECT_EQ(eval::precision_name(eval::parse_precision(name)), name);
  }
  EXPECT_ERROR_CONTAINS(eval::parse_precision("fp16"), "--precision: unknown precision 'fp16'");
  EXPECT_EQ(eval::default_precision(at::Device(at::kCPU)), eval::Precision::Fp32);
  EXPECT_EQ(eval::default_precision(at::Device(at::kCUDA)), eval::Precision::Tf32);
}

TEST(Precision, Tf32OnTheCpuIsAnErrorNotASilentFp32Run) {
  auto& t = test_util::trained();
  EXPECT_ERROR_CONTAINS(eval::InferencePrecision(eval::Precision::Tf32, *t.net, at::Device(at::kCPU)),
                        "--precision tf32: TF32 is a CUDA tensor-core format");
}

TEST(Precision, SetsTheTf32SwitchesForItsLifetimeOnly) {
  auto& t = test_util::trained();
  auto& context = at::globalContext();
  context.setAllowTF32CuDNN(true);
  context.setAllowTF32CuBLAS(false);
  {
    const eval::InferencePrecision guard(eval::Precision::Fp32, *t.net, at::Device(at::kCPU));
    EXPECT_FALSE(context.allowTF32CuDNN());
    EXPECT_FALSE(context.allowTF32CuBLAS());
  }
  EXPECT_TRUE(context.allowTF32CuDNN());
  EXPECT_FALSE(context.allowTF32CuBLAS());
  {
    const eval::InferencePrecision guard(eval::Precision::Tf32, *t.net, at::Device(at::kCUDA));
    EXPECT_TRUE(context.allowTF32CuDNN());
    EXPECT_TRUE(context.allowTF32CuBLAS());
  }
  EXPECT_TRUE(context.allowTF32CuDNN());
  EXPECT_FALSE(context.allowTF32CuBLAS());
  EXPECT_EQ(t.net->parameters().front().scalar_type(), at::kFloat);
}

// The criterion for offering a precision as safe (issue 7): its RErr stays inside the fp32 run's
// 95% confidence interval, rate by rate.
TEST(Precision, Bf16RErrStaysInsideTheFp32ConfidenceInterval) {
  const eval::SweepResult fp32 = eval::run_sweep(*test_util::trained().net, test_util::trained().q,
                                                 test_util::trained().data, sweep_options());
  test_util::Trained twin;  // trained again from the same seed: the same quantized model, bit for bit
  for (size_t i = 0; i < twin.q.tensors.size(); ++i) {
    ASSERT_TRUE(twin.q.tensors[i].codes.equal(test_util::trained().q.tensors[i].codes));
  }
  const eval::InferencePrecision guard(eval::Precision::Bf16, *twin.net, at::Device(at::kCPU));
  for (const at::Tensor& p : twin.q.params) EXPECT_EQ(p.scalar_type(), at::kBFloat16);
  const eval::SweepResult bf16 = eval::run_sweep(*twin.net, twin.q, twin.data, sweep_options());
  EXPECT_NEAR(bf16.clean_error, fp32.clean_error, 0.01);
  for (size_t i = 0; i < fp32.results.size(); ++i) {
    const auto& a = fp32.results[i];
    const auto& b = bf16.results[i];
    EXPECT_GT(a.rerr_mean, fp32.clean_error) << "rate " << a.rate << " should hurt the model";
    EXPECT_GE(b.rerr_mean, a.rerr_ci95_low) << "rate " << a.rate;
    EXPECT_LE(b.rerr_mean, a.rerr_ci95_high) << "rate " << a.rate;
  }
}
