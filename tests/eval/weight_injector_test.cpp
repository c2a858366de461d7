#include "bitrobust/eval/weight_injector.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <cstring>

#include "bitrobust/bits/bit_errors_kernels.h"
#include "bitrobust/config.h"
#include "bitrobust/eval/bit_error_eval.h"
#include "bitrobust/eval/evaluate.h"
#include "bitrobust/report/eval_report.h"
#include "model_fixtures.h"

using namespace bitrobust;

namespace {

// The same bytes, not only the same values (-0 and +0 differ here).
bool same_bits(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.contiguous(), y = b.contiguous();
  return x.scalar_type() == y.scalar_type() && x.sizes().equals(y.sizes()) &&
         std::memcmp(x.data_ptr(), y.data_ptr(), static_cast<size_t>(x.numel()) * x.element_size()) == 0;
}

// An MLP with a 64 x 1030 weight (65,920 codes: three work items of the CPU kernel, the last one
// ending in a cut chunk) and small tensors, untrained: only the codes' bits matter here.
std::shared_ptr<models::Classifier> mlp() {
  static_assert(64 * 1030 > 2 * bits::kCpuItemChunks * bits::kChunkElements, "three work items");
  torch::manual_seed(5);
  return models::build_model(test_util::tiny_mlp_spec(1030));
}

struct Step {
  const char* model;
  double rate;
  uint64_t seed;
  const char* layers;
};

// Rates up and down, other error models and a selector: each step must undo the previous one.
// Below about 0.25% for 8-bit codes (1 in 50 of the model's elements changed) patterns are
// listed, above applied densely (NOTE [Incremental injection]): both, and every change between them.
const Step kSteps[] = {
    {"random", 0.0001, 1, ""},  {"random", 0.0002, 1, ""},  {"random", 0.01, 1, ""},
    {"random", 0.0001, 2, ""},  {"random", 0.0, 3, ""},     {"stuck_at_1", 0.0003, 4, ""},
    {"msb", 0.1, 5, ""},        {"random,0to1=0.0002,1to0=0.00005", 0.0001, 6, ""},
    {"lsb2", 0.2, 7, "bias"},   {"random", 0.3, 8, "^fc1\\."},  {"stuck_at_0", 0.5, 9, ""},
    {"random", 0.001, 10, ""},  {"random", 0.0002, 11, "^fc_out\\."}, {"random", 0.0001, 12, ""},
    {"random", 1.0, 13, "^fc_out\\.bias$"},  // every bit of 4 elements: listed, at rate 1
    {"random", 0.0001, 14, ""},
};

// The dense path: every code injected into a fresh copy, every weight dequantized from it.
struct Dense {
  std::vector<at::Tensor> codes, weights;
  int64_t changed = 0;
};
Dense dense(const quant::QuantizedModel& q, const Step& step) {
  std::vector<bits::CodeTensor> codes = eval::perturbable_codes(q);
  Dense d;
  d.changed = bits::inject_bit_errors(codes, bits::ErrorModel::parse(step.model, step.rate), step.seed,
                                      bits::ParamSelector(step.layers));
  for (size_t i = 0; i < codes.size(); ++i) {
    d.codes.push_back(codes[i].out);
    quant::QuantizedTensor t = q.tensors[i];
    t.codes = codes[i].out;
    d.weights.push_back(quant::dequantize(t));
  }
  return d;
}

void expect_dense_results(const char* scheme) {
  auto net = mlp();
  const quant::QuantizedModel q = quant::quantize_model(*net, quant::QuantScheme::parse(scheme));
  eval::WeightInjector injector(q);
  ASSERT_TRUE(injector.incremental());
  for (const Step& step : kSteps) {
    SCOPED_TRACE(std::string(scheme) + " " + step.model + " p=" + std::to_string(step.rate) + " seed " +
                 std::to_string(step.seed) + " layers '" + step.layers + "'");
    const int64_t changed =
        injector.inject(bits::ErrorModel::parse(step.model, step.rate), step.seed, bits::ParamSelector(step.layers));
    const Dense d = dense(q, step);
    EXPECT_EQ(changed, d.changed);
    if (step.rate >= 0.0001 && std::string(step.layers).empty()) EXPECT_GT(changed, 0);
    for (size_t i = 0; i < q.params.size(); ++i) {
      EXPECT_TRUE(same_bits(injector.codes()[i].out, d.codes[i])) << q.names[i];
      EXPECT_TRUE(same_bits(q.params[i], d.weights[i])) << q.names[i];
    }
  }
  injector.load_clean();
  for (size_t i = 0; i < q.params.size(); ++i) {
    EXPECT_TRUE(same_bits(injector.codes()[i].out, q.tensors[i].codes)) << q.names[i];
    EXPECT_TRUE(same_bits(q.params[i], quant::dequantize(q.tensors[i]))) << q.names[i];
  }
}

}  // namespace

// NOTE [Incremental injection]: only the elements either pattern changes are rewritten, and the
// weights are the dense path's bit for bit, for every code format.
TEST(WeightInjector, IncrementalEqualsDenseForEveryFormat) {
  for (const char* scheme : {"u8-asym-tensor-round-clip0.1", "s8-sym-tensor-trunc", "u8-sym-global1.0-trunc",
                             "s4-sym-channel-round", "u3-asym-channel-trunc", "s12-sym-tensor-round",
                             "u16-asym-channel-round"}) {
    expect_dense_results(scheme);
  }
}

// Parameters cast after the injector was made (their storage replaced) are noticed: the next
// pattern takes the dense path, with the same values.
TEST(WeightInjector, ParametersReplacedAfterConstructionAreNoticed) {
  auto net = mlp();
  const quant::QuantizedModel q = quant::quantize_model(*net, quant::QuantScheme::parse("s8-sym-tensor-round"));
  eval::WeightInjector injector(q);
  injector.inject(bits::ErrorModel::parse("random", 0.0002), 1);  // listed
  EXPECT_TRUE(injector.incremental());
  net->to(at::kDouble);
  const Step step{"random", 0.0001, 2, ""};
  const Dense d = dense(q, step);
  EXPECT_EQ(injector.inject(bits::ErrorModel::parse(step.model, step.rate), step.seed), d.changed);
  EXPECT_EQ(injector.path(), eval::WeightInjector::Path::Dense);
  for (size_t i = 0; i < q.params.size(); ++i) {
    EXPECT_TRUE(same_bits(q.params[i], d.weights[i].to(at::kDouble))) << q.names[i];
  }
}

// A parameter given new storage of the same type is noticed too.
TEST(WeightInjector, ParameterWithNewStorageIsNoticed) {
  auto net = mlp();
  const quant::QuantizedModel q = quant::quantize_model(*net, quant::QuantScheme::parse("s8-sym-tensor-round"));
  eval::WeightInjector injector(q);
  injector.inject(bits::ErrorModel::parse("random", 0.0002), 1);  // listed
  {
    torch::NoGradGuard no_grad;
    at::Tensor p = q.params[0];
    p.set_data(p.clone());  // same values, new storage: the state's elements are elsewhere now
  }
  const Step step{"random", 0.0001, 2, ""};
  const Dense d = dense(q, step);
  EXPECT_EQ(injector.inject(bits::ErrorModel::parse(step.model, step.rate), step.seed), d.changed);
  EXPECT_EQ(injector.path(), eval::WeightInjector::Path::Dense);
  for (size_t i = 0; i < q.params.size(); ++i) EXPECT_TRUE(same_bits(q.params[i], d.weights[i])) << q.names[i];
}

// BITROBUST_INJECTION=dense forces the dense path (the escape hatch for a doubtful fused kernel),
// with the same weights; another value is an error naming the variable.
TEST(WeightInjector, EnvironmentCanForceTheDensePath) {
  auto net = mlp();
  const quant::QuantizedModel q = quant::quantize_model(*net, quant::QuantScheme::parse("u8-asym-tensor-round-clip0.1"));
  const Step step{"random", 0.0002, 4, ""};
  const Dense d = dense(q, step);
  ::setenv("BITROBUST_INJECTION", "dense", 1);
  {
    eval::WeightInjector injector(q);
    EXPECT_EQ(injector.path(), eval::WeightInjector::Path::Dense);
    EXPECT_EQ(injector.inject(bits::ErrorModel::parse(step.model, step.rate), step.seed), d.changed);
    for (size_t i = 0; i < q.params.size(); ++i) EXPECT_TRUE(same_bits(q.params[i], d.weights[i])) << q.names[i];
  }
  ::setenv("BITROBUST_INJECTION", "fused", 1);
  EXPECT_ERROR_CONTAINS(eval::WeightInjector{q}, "BITROBUST_INJECTION must be 'dense' (or unset), got 'fused'");
  ::unsetenv("BITROBUST_INJECTION");
  EXPECT_EQ(eval::WeightInjector(q).path(), eval::WeightInjector::Path::Incremental);
}

// Parameters that are not float32 take the dense path, and receive the same values.
TEST(WeightInjector, DoubleNetworkTakesTheDensePathWithTheSameWeights) {
  auto net = mlp();
  const quant::QuantizedModel q = quant::quantize_model(*net, quant::QuantScheme::parse("u8-asym-tensor-round-clip0.1"));
  const Step step{"random", 0.02, 3, ""};
  const Dense d = dense(q, step);
  net->to(at::kDouble);
  eval::WeightInjector injector(q);
  EXPECT_EQ(injector.path(), eval::WeightInjector::Path::Dense);
  EXPECT_EQ(injector.inject(bits::ErrorModel::parse(step.model, step.rate), step.seed), d.changed);
  for (size_t i = 0; i < q.params.size(); ++i) {
    ASSERT_EQ(q.params[i].scalar_type(), at::kDouble);
    EXPECT_TRUE(same_bits(q.params[i], d.weights[i].to(at::kDouble))) << q.names[i];
  }
}

// The sweep through the injector gives the RErr of dense injection, pattern by pattern.
TEST(WeightInjector, SweepMatchesDenseEvaluation) {
  auto& t = test_util::trained();
  // Listed, dense, listed again (NOTE [Incremental injection]).
  const auto r = eval::run_sweep(*t.net, t.q, t.data, test_util::quiet_sweep_options({0.0003, 0.05, 0.0001}, 3));
  torch::NoGradGuard no_grad;
  t.net->eval();
  t.q.load_clean_weights();
  const at::Tensor clean_wrong = eval::evaluate(*t.net, t.data, 128).correct.logical_not();
  for (const auto& rate : r.results) {
    for (int64_t s = 0; s < 3; ++s) {
      const Dense d = dense(t.q, {"random", rate.rate, 100 + static_cast<uint64_t>(s), ""});
      for (size_t i = 0; i < t.q.params.size(); ++i) t.q.params[i].copy_(d.weights[i]);
      const at::Tensor wrong = eval::evaluate(*t.net, t.data, 128).correct.logical_not();
      EXPECT_EQ(rate.rerr[s], clean_wrong.logical_or(wrong).to(at::kDouble).mean().item<double>());
      EXPECT_EQ(rate.bits_changed[s], d.changed);
    }
  }
  t.q.load_clean_weights();
}

// Rate 0 with an explicit rate for one direction still has errors in that direction.
TEST(WeightInjector, SweepAtRateZeroWithAnExplicitDirectionInjects) {
  auto& t = test_util::trained();
  auto o = test_util::quiet_sweep_options({0.0}, 2);
  o.error_model = "random,0to1=0.05";
  const auto r = eval::run_sweep(*t.net, t.q, t.data, o);
  for (int64_t s = 0; s < 2; ++s) {
    const Dense d = dense(t.q, {"random,0to1=0.05", 0.0, 100 + static_cast<uint64_t>(s), ""});
    EXPECT_GT(d.changed, 0);
    EXPECT_EQ(r.results[0].bits_changed[s], d.changed);
  }
  // The tables show that rate's RErr in a row of its own, next to the clean error.
  report::SweepContext ctx;
  ctx.scheme = t.q.scheme.to_string();
  ctx.error_model = o.error_model;
  const nlohmann::json j = report::sweep_to_json(r, o, ctx);
  const std::string table = report::sweep_table(j);
  EXPECT_NE(table.find("\n  clean "), std::string::npos) << table;
  EXPECT_NE(table.find("  0%  "), std::string::npos) << table;
  EXPECT_NE(report::compare_table({j}).find("\n0%  "), std::string::npos) << report::compare_table({j});
  // Without errors at rate 0, the clean error is the 0 row and there is no other.
  ctx.error_model = "random";
  const std::string plain = report::sweep_table(report::sweep_to_json(r, o, ctx));
  EXPECT_EQ(plain.find("  0%  "), std::string::npos) << plain;
  EXPECT_EQ(plain.find("\n  clean "), std::string::npos) << plain;
}

#ifdef BITROBUST_WITH_CUDA
// On CUDA the injector takes the fused path; its weights equal the CPU's incremental ones, pattern
// after pattern (the CPU listing some patterns, applying others densely).
TEST(WeightInjectorCuda, CudaWeightsEqualTheCpuIncrementalOnes) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto cpu_net = mlp();
  auto gpu_net = mlp();  // the same weights: same seed
  const quant::QuantizedModel cpu_q = quant::quantize_model(*cpu_net, quant::QuantScheme::parse("u8-asym-channel-round"));
  // As `bitrobust eval --device cuda` does: codes and ranges from the CPU, moved with the network.
  quant::QuantizedModel gpu_q = quant::quantize_model(*gpu_net, cpu_q.scheme);
  gpu_net->to(at::kCUDA);
  auto named = gpu_net->named_parameters();
  for (size_t i = 0; i < gpu_q.names.size(); ++i) {
    gpu_q.params[i] = named[gpu_q.names[i]];
    gpu_q.tensors[i].codes = cpu_q.tensors[i].codes.to(at::kCUDA);
    gpu_q.tensors[i].ranges = cpu_q.tensors[i].ranges.to(at::kCUDA);
  }
  eval::WeightInjector cpu(cpu_q), gpu(gpu_q);
  EXPECT_EQ(cpu.path(), eval::WeightInjector::Path::Incremental);
  EXPECT_EQ(gpu.path(), eval::WeightInjector::Path::Fused);
  for (const Step& step : kSteps) {
    const bits::ErrorModel model = bits::ErrorModel::parse(step.model, step.rate);
    const bits::ParamSelector selector(step.layers);
    const std::string what = std::string(step.model) + " p=" + std::to_string(step.rate);
    EXPECT_EQ(cpu.inject(model, step.seed, selector), gpu.inject(model, step.seed, selector)) << what;
    for (size_t i = 0; i < cpu_q.params.size(); ++i) {
      EXPECT_TRUE(same_bits(cpu.codes()[i].out, gpu.codes()[i].out.cpu())) << what << " " << cpu_q.names[i];
      EXPECT_TRUE(same_bits(cpu_q.params[i], gpu_q.params[i].cpu())) << what << " " << cpu_q.names[i];
    }
  }
}
#endif
