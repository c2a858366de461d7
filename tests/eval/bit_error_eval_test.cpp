#include "bitrobust/eval/bit_error_eval.h"

#include <gtest/gtest.h>
#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>
#include <torch/torch.h>

#include "bitrobust/bits/pattern.h"
#include "bitrobust/common/error.h"
#include "bitrobust/eval/evaluate.h"
#include "bitrobust/report/eval_report.h"
#include "bitrobust/train/trainer.h"
#include "test_util.h"
#include "model_fixtures.h"

using namespace bitrobust;

namespace {
using test_util::trained;
eval::SweepOptions options(std::vector<double> rates, int64_t patterns = 6) {
  return test_util::quiet_sweep_options(std::move(rates), patterns);
}
}  // namespace

TEST(BitErrorEval, ZeroRateGivesExactlyTheCleanError) {
  auto& t = trained();
  const auto r = eval::run_sweep(*t.net, t.q, t.data, options({0.0}));
  for (double v : r.results[0].rerr) EXPECT_EQ(v, r.clean_error);
  EXPECT_EQ(r.results[0].rerr_mean, r.clean_error);
  EXPECT_EQ(r.results[0].rerr_std, 0.0);
}

TEST(BitErrorEval, CleanErrorCountsEveryExampleOnceWhateverTheBatch) {
  // The clean error computed here example by example, against the sweep's and evaluate's batches
  // (400 examples: batches of 128 end with a partial one of 16; batches of 7 with one of 1). An
  // untrained network, so that there are errors to count (the trained one makes none).
  struct Untrained {
    data::Dataset data = test_util::synthetic_dataset(400, 4, 8, 11);
    std::shared_ptr<models::Classifier> net;
    quant::QuantizedModel q;
  } t;
  torch::manual_seed(3);
  t.net = models::build_model(test_util::tiny_mlp_spec(32));
  t.q = quant::quantize_model(*t.net, quant::QuantScheme::preset("rquant", 8));
  t.q.load_clean_weights();
  t.net->eval();
  torch::NoGradGuard no_grad;
  const data::Normalization norm = data::normalization_for(t.data.name);
  int64_t wrong = 0;
  std::vector<bool> correct;
  std::vector<float> margin;  // top logit minus the next: a near tie may flip with another batch's rounding
  for (int64_t i = 0; i < t.data.size(); ++i) {
    const at::Tensor x = data::make_batch(t.data, torch::full({1}, i, torch::kLong), norm, nullptr, 0, 0);
    const at::Tensor logits = t.net->forward(x)[0];
    const bool right = logits.argmax().item<int64_t>() == t.data.labels[i].item<int64_t>();
    const at::Tensor top = std::get<0>(logits.topk(2));
    margin.push_back((top[0] - top[1]).item<float>());
    correct.push_back(right);
    wrong += right ? 0 : 1;
  }
  const double expected = static_cast<double>(wrong) / static_cast<double>(t.data.size());
  ASSERT_GT(wrong, 40);  // (a network that is never wrong would not tell a miscounted batch)
  ASSERT_LT(wrong, 360);
  // Batches of other sizes compute the logits with other roundings, so an example whose two top
  // logits nearly tie may be decided either way; any other difference is a miscounted example.
  int64_t near_ties = 0;
  for (float m : margin) near_ties += m < 1e-4f;
  const auto r = eval::run_sweep(*t.net, t.q, t.data, options({0.0}, 1));
  EXPECT_EQ(r.examples, 400);
  EXPECT_NEAR(r.clean_error, expected, static_cast<double>(near_ties) / 400 + 1e-15);
  for (int64_t batch : {7, 128, 400, 1000}) {
    const eval::EvalResult e = eval::evaluate(*t.net, t.data, batch);
    EXPECT_EQ(e.examples, 400) << "batch " << batch;
    ASSERT_EQ(e.correct.numel(), 400);
    EXPECT_EQ(e.error, eval::error_fraction(e.correct.logical_not())) << "batch " << batch;
    EXPECT_NEAR(e.error, expected, static_cast<double>(near_ties) / 400 + 1e-15) << "batch " << batch;
    for (int64_t i = 0; i < 400; ++i) {
      if (margin[i] >= 1e-4f) ASSERT_EQ(e.correct[i].item<bool>(), correct[i]) << "example " << i << ", batch " << batch;
    }
  }
  // Errors are counts over sizes, one rounding, wherever they are computed: the clean error (10 of
  // 30 wrong: 1 - 20/30 would be 0.33333333333333337) is never above an RErr of the same examples
  // (found by a review: RErr printed a rounding step below the clean error).
  for (int64_t n : {3, 30, 49, 500}) {
    for (int64_t k : {int64_t{0}, int64_t{1}, n / 3, n - 1, n}) {
      const at::Tensor wrong = torch::arange(n).lt(k);
      EXPECT_EQ(eval::error_fraction(wrong), static_cast<double>(k) / static_cast<double>(n)) << k << " of " << n;
    }
  }
  // (The case the counts avoid: the first n examples, n chosen so that their number of errors k
  // gives 1 - (n - k) / n != k / n.)
  int64_t n = 20;
  for (; n <= 100; ++n) {
    const int64_t k = std::count(correct.begin(), correct.begin() + n, false);
    if (1.0 - static_cast<double>(n - k) / static_cast<double>(n) != static_cast<double>(k) / static_cast<double>(n)) break;
  }
  ASSERT_LE(n, 100);
  const data::Dataset few = t.data.head(n);
  const auto sweep = eval::run_sweep(*t.net, t.q, few, options({1e-6, 1e-3}, 5));
  EXPECT_EQ(sweep.clean_error, eval::evaluate(*t.net, few, 7).error);
  for (const auto& rate : sweep.results) {
    for (size_t i = 0; i < rate.rerr.size(); ++i) {
      EXPECT_GE(rate.rerr[i], sweep.clean_error) << "rate " << rate.rate << ", pattern " << i;
      EXPECT_GE(rate.rerr[i], rate.perturbed_error[i]) << "rate " << rate.rate << ", pattern " << i;
    }
  }
}

TEST(BitErrorEval, PatternsChangeBinomiallyManyBitsAndRErrBoundsEachPattern) {
  // Symmetric random errors flip every selected bit, so a pattern changes Binomial(total bits, p)
  // bits; each pattern's RErr (wrong clean OR wrong perturbed) lies between its perturbed error and
  // the clean error plus it.
  auto& t = trained();
  const double total_bits = static_cast<double>(t.q.total_bits());
  ASSERT_GT(total_bits, 10000.0);
  const auto r = eval::run_sweep(*t.net, t.q, t.data, options({0.001, 0.01, 0.2}, 8));
  for (const auto& rate : r.results) {
    const double mean = total_bits * rate.rate, sd = std::sqrt(total_bits * rate.rate * (1 - rate.rate));
    ASSERT_EQ(rate.bits_changed.size(), 8u);
    for (size_t i = 0; i < rate.rerr.size(); ++i) {
      EXPECT_NEAR(static_cast<double>(rate.bits_changed[i]), mean, 5 * sd) << "rate " << rate.rate << ", pattern " << i;
      EXPECT_GE(rate.rerr[i], rate.perturbed_error[i]) << "rate " << rate.rate << ", pattern " << i;
      EXPECT_LE(rate.rerr[i], r.clean_error + rate.perturbed_error[i] + 1e-12) << "rate " << rate.rate;
    }
  }
}

TEST(BitErrorEval, RErrNeverBelowCleanAndMeanGrowsWithRate) {
  auto& t = trained();
  const auto r = eval::run_sweep(*t.net, t.q, t.data, options({0.001, 0.01, 0.05, 0.2}));
  double previous = r.clean_error;
  for (const auto& rate : r.results) {
    for (double v : rate.rerr) EXPECT_GE(v, r.clean_error);
    EXPECT_GE(rate.rerr_mean, previous) << "rate " << rate.rate;
    EXPECT_LE(rate.rerr_min, rate.rerr_mean);
    EXPECT_GE(rate.rerr_max, rate.rerr_mean);
    EXPECT_LE(rate.rerr_ci95_low, rate.rerr_mean);
    EXPECT_GE(rate.rerr_ci95_high, rate.rerr_mean);
    // (nor is the interval of their mean: kept above the clean error, as above 0)
    EXPECT_GE(rate.rerr_ci95_low, std::min(r.clean_error, rate.rerr_mean)) << "rate " << rate.rate;
    previous = rate.rerr_mean;
  }
  EXPECT_GT(r.results.back().rerr_mean, r.clean_error + 0.05);
}

namespace {
/// The trained MLP's weights in a network whose forward pass throws from its `fail_at`-th call on.
struct FailingForward : models::Classifier {
  std::shared_ptr<models::Classifier> inner;
  int calls = 0, fail_at;
  FailingForward(const models::ModelSpec& spec, int fail_at_call) : fail_at(fail_at_call) {
    inner = register_module("inner", models::build_model(spec));
  }
  at::Tensor forward(at::Tensor x) override {
    BR_CHECK(++calls < fail_at, "forward pass ", calls, " fails");
    return inner->forward(x);
  }
};
}  // namespace

// A sweep or a replay that throws after injecting errors leaves the network with its clean
// quantized weights, as one that returns does (found by a review).
TEST(BitErrorEval, AFailedSweepOrReplayLeavesTheCleanWeights) {
  auto& t = trained();
  for (const bool replay : {false, true}) {
    SCOPED_TRACE(replay ? "replay" : "sweep");
    FailingForward net(test_util::tiny_mlp_spec(32), 2);  // the clean pass (one batch of 400) succeeds
    const quant::QuantizedModel q = quant::quantize_model(net, quant::QuantScheme::preset("rquant", 8));
    auto o = options({0.2}, 2);
    o.batch_size = 500;
    if (replay) {
      const bits::BitPattern pattern = bits::draw_pattern(eval::param_specs(q), bits::ErrorModel::parse("random", 0.2), 1);
      EXPECT_ERROR_CONTAINS(eval::evaluate_pattern(net, q, t.data, pattern, 500), "forward pass 2 fails");
    } else {
      EXPECT_ERROR_CONTAINS(eval::run_sweep(net, q, t.data, o), "forward pass 2 fails");
    }
    EXPECT_EQ(net.calls, 2);
    for (size_t i = 0; i < q.params.size(); ++i) {
      EXPECT_TRUE(torch::equal(q.params[i], quant::dequantize(q.tensors[i]))) << q.names[i];
    }
  }
}

TEST(BitErrorEval, SameSeedReproducesAndWeightsAreRestored) {
  auto& t = trained();
  const auto a = eval::run_sweep(*t.net, t.q, t.data, options({0.01, 0.05}, 4));
  const auto b = eval::run_sweep(*t.net, t.q, t.data, options({0.05, 0.01}, 4));
  EXPECT_EQ(a.results[0].rerr, b.results[1].rerr);
  EXPECT_EQ(a.results[1].rerr, b.results[0].rerr);
  EXPECT_EQ(a.results[0].bits_changed, b.results[1].bits_changed);
  // After the sweep the network holds the clean quantized weights.
  for (size_t i = 0; i < t.q.params.size(); ++i) {
    EXPECT_TRUE(torch::equal(t.q.params[i], quant::dequantize(t.q.tensors[i]))) << t.q.names[i];
  }
  auto other = options({0.01}, 4);
  other.seed = 200;
  EXPECT_NE(eval::run_sweep(*t.net, t.q, t.data, other).results[0].bits_changed, a.results[0].bits_changed);
}

TEST(BitErrorEval, StatisticsFollowTheirFormulas) {
  eval::RateResult r;
  r.rerr = {0.1, 0.2, 0.3, 0.4};
  r.perturbed_error = {0.1, 0.1, 0.1, 0.1};
  eval::summarize(r);
  EXPECT_NEAR(r.rerr_mean, 0.25, 1e-12);
  EXPECT_NEAR(r.rerr_std, std::sqrt(0.05 / 3), 1e-12);
  EXPECT_NEAR(r.rerr_ci95_high - r.rerr_mean, 3.182 * std::sqrt(0.05 / 3) / 2, 1e-9);
  EXPECT_DOUBLE_EQ(r.rerr_min, 0.1);
  EXPECT_DOUBLE_EQ(r.rerr_max, 0.4);
  // An interval reaching past what an error can be stops at 0 and 1; the mean and std stay.
  r.rerr = {0.02, 0.5, 0.98};
  r.perturbed_error = r.rerr;
  eval::summarize(r);
  EXPECT_NEAR(r.rerr_mean, 0.5, 1e-12);
  EXPECT_DOUBLE_EQ(r.rerr_ci95_low, 0.0);
  EXPECT_DOUBLE_EQ(r.rerr_ci95_high, 1.0);
}

TEST(BitErrorEval, RatesParseAsFractionsOrPercentages) {
  EXPECT_EQ(eval::parse_rates("0.01%,0.1%,1%"), (std::vector<double>{0.0001, 0.001, 0.01}));
  EXPECT_EQ(eval::parse_rates("0.001, 0.5,1"), (std::vector<double>{0.001, 0.5, 1.0}));
  EXPECT_THROW(eval::parse_rates("2"), Error);
  EXPECT_THROW(eval::parse_rates("-0.1"), Error);
  EXPECT_THROW(eval::parse_rates("150%"), Error);
  EXPECT_THROW(eval::parse_rates("abc"), Error);
  EXPECT_THROW(eval::parse_rates("0.1,,0.2"), Error);
  EXPECT_ERROR_CONTAINS(eval::parse_rates("1%,"), "--rates '1%,': empty entry");
  EXPECT_ERROR_CONTAINS(eval::parse_rates("1%,0.01"), "bit error rate 0.01 is given twice");
  EXPECT_ERROR_CONTAINS(eval::parse_rates("1e-400"), "too small or too large to represent");
  EXPECT_ERROR_CONTAINS(eval::parse_rates("nan", "--randbet"), "--randbet: 'nan' is not a number");
  EXPECT_ERROR_CONTAINS(eval::parse_rates("0x0.1"), "'0x0.1' is not a number");  // stod would read hex
  EXPECT_ERROR_CONTAINS(eval::parse_rates("inf%"), "'inf%' is not a number");
  EXPECT_THROW(eval::parse_rates(""), Error);
}

TEST(BitErrorEval, BadOptionsAreErrors) {
  auto& t = trained();
  auto o = options({0.01}, 0);
  EXPECT_ERROR_CONTAINS(eval::run_sweep(*t.net, t.q, t.data, o), "--patterns must be at least 1, got 0");
  o = options({0.01});
  o.error_model = "cosmic";
  EXPECT_ERROR_CONTAINS(eval::run_sweep(*t.net, t.q, t.data, o), "cosmic");
  o = options({1.5});
  EXPECT_ERROR_CONTAINS(eval::run_sweep(*t.net, t.q, t.data, o), "bit error rate 1.5 is outside [0, 1]");
  o = options({});
  EXPECT_ERROR_CONTAINS(eval::run_sweep(*t.net, t.q, t.data, o), "no bit error rates given");
  o = options({0.01, 0.02, 0.03}, 4000000);
  EXPECT_ERROR_CONTAINS(eval::run_sweep(*t.net, t.q, t.data, o),
                        "--patterns 4000000 at 3 rates is more than the 10000000 pattern evaluations a result holds");
}

namespace {
/// The result JSON of a sweep at rates 0 and 1% over `patterns` patterns on the trained MLP.
nlohmann::json sweep_json_of_trained_mlp(int64_t patterns) {
  auto& t = trained();
  const auto o = options({0.0, 0.01}, patterns);
  const auto r = eval::run_sweep(*t.net, t.q, t.data, o);
  report::SweepContext ctx;
  ctx.scheme = t.q.scheme.to_string();
  ctx.error_model = "random";
  ctx.model_name = "mlp";
  return report::sweep_to_json(r, o, ctx);
}
}  // namespace

// One pattern has no spread: tables say so instead of printing a standard deviation of 0.
TEST(BitErrorEval, OnePatternShowsNoSpread) {
  const auto j = sweep_json_of_trained_mlp(1);
  EXPECT_NO_THROW(report::validate_sweep_json(j, "test"));
  const std::string table = report::sweep_table(j);
  const std::string row = table.substr(table.find("  1%"));
  EXPECT_NE(row.find(" -  "), std::string::npos) << table;
  EXPECT_NE(report::compare_table({j}).find("(1 pattern)"), std::string::npos) << report::compare_table({j});
  EXPECT_TRUE(j["results"][1]["rerr_ci95"].is_null()) << j["results"][1];
  const auto three = sweep_json_of_trained_mlp(3)["results"][1]["rerr_ci95"];
  ASSERT_TRUE(three.is_array() && three.size() == 2) << three;
  EXPECT_LE(three[0].get<double>(), three[1].get<double>());
}

TEST(BitErrorEval, JsonFollowsTheDocumentedSchema) {
  const auto j = sweep_json_of_trained_mlp(3);
  EXPECT_NO_THROW(report::validate_sweep_json(j, "test"));
  EXPECT_EQ(j["patterns"], 3);
  EXPECT_EQ(j["results"][1]["per_pattern"].size(), 3u);
  auto broken = j;
  broken.erase("clean_error");
  EXPECT_THROW(report::validate_sweep_json(broken, "test"), Error);
  broken = j;
  broken["results"][0]["rerr_mean"] = 1.5;
  EXPECT_THROW(report::validate_sweep_json(broken, "test"), Error);
  broken = j;
  broken["format"] = "bitrobust-eval-99";
  EXPECT_ERROR_CONTAINS(report::validate_sweep_json(broken, "r.json"), "not a bitrobust eval result");
  broken["format"] = "bitrobust-replay-1";  // what `eval --replay --json` writes
  EXPECT_ERROR_CONTAINS(report::validate_sweep_json(broken, "r.json"), "one replayed pattern (eval --replay)");
  EXPECT_EQ(j["activations"], "nchw");
  broken = j;
  broken["activations"] = "nhwc";
  EXPECT_ERROR_CONTAINS(report::validate_sweep_json(broken, "r.json"), "activations must be \"nchw\" or \"channels_last\"");
  broken["activations"] = "channels_last";
  EXPECT_NO_THROW(report::validate_sweep_json(broken, "r.json"));
  broken.erase("activations");  // results written before it was recorded
  EXPECT_NO_THROW(report::validate_sweep_json(broken, "r.json"));
  broken = j;
  broken["results"][1]["rerr_std"] = -1;
  EXPECT_ERROR_CONTAINS(report::validate_sweep_json(broken, "r.json"), "rerr_std must be a number in [0, 1]");
  broken["results"][1]["rerr_std"] = 1e300;
  EXPECT_ERROR_CONTAINS(report::validate_sweep_json(broken, "r.json"), "rerr_std must be a number in [0, 1]");
  broken = j;  // per_pattern (what compare pairs) and the summary (what tables show) disagree
  broken["results"][1]["per_pattern"][0] = broken["results"][1]["per_pattern"][0].get<double>() + 0.01;
  EXPECT_ERROR_CONTAINS(report::validate_sweep_json(broken, "r.json"), "is not the mean of per_pattern at rate");
  // The summary's spread and range are those of per_pattern (an edited rerr_std showed "±90.00").
  broken = j;
  broken["results"][1]["rerr_std"] = broken["results"][1]["rerr_std"].get<double>() + 0.5;
  EXPECT_ERROR_CONTAINS(report::validate_sweep_json(broken, "r.json"), "is not that of per_pattern at rate");
  broken = j;
  broken["results"][1]["rerr_max"] = 1.0;
  EXPECT_ERROR_CONTAINS(report::validate_sweep_json(broken, "r.json"), "rerr_max 1.0 is not that of per_pattern");
  broken = j;
  broken["results"][1]["bits_changed"][0] = -3;
  EXPECT_ERROR_CONTAINS(report::validate_sweep_json(broken, "r.json"), "bits_changed must hold one count >= 0 per pattern");
  broken["results"][1]["bits_changed"][0] = 2.5;
  EXPECT_ERROR_CONTAINS(report::validate_sweep_json(broken, "r.json"), "bits_changed must hold one count >= 0 per pattern");
  broken = j;
  broken["seed"] = -1;
  EXPECT_ERROR_CONTAINS(report::validate_sweep_json(broken, "r.json"), "seed must be an integer >= 0");
  broken["seed"] = 18446744073709551615ull;  // (the largest seed: read as unsigned)
  EXPECT_NO_THROW(report::validate_sweep_json(broken, "r.json"));
  broken = j;
  broken["model_name"] = 5;
  EXPECT_ERROR_CONTAINS(report::validate_sweep_json(broken, "r.json"), "result file r.json: model_name must be a string");
  broken = j;
  broken["layout"] = 5;  // (compare pairs files by it)
  EXPECT_ERROR_CONTAINS(report::validate_sweep_json(broken, "r.json"), "result file r.json: layout must be a string");
  broken["layout"] = nullptr;  // (no layout recorded: files written before 2026-12-05)
  EXPECT_NO_THROW(report::validate_sweep_json(broken, "r.json"));
  broken = j;
  broken["results"][1]["rate"] = broken["results"][0]["rate"];
  EXPECT_ERROR_CONTAINS(report::validate_sweep_json(broken, "r.json"), "appears twice");
  // Errors are counts over `examples` (a file edited to 7 examples was compared as a result).
  const int64_t examples = j["examples"].get<int64_t>();
  ASSERT_GT(examples, 7);
  broken = j;
  broken["examples"] = 0;
  EXPECT_ERROR_CONTAINS(report::validate_sweep_json(broken, "r.json"), "examples must be a positive integer");
  broken["examples"] = 2.5;
  EXPECT_ERROR_CONTAINS(report::validate_sweep_json(broken, "r.json"), "examples must be a positive integer");
  broken["examples"] = examples * 3;  // every count of `examples` is one of 3 times as many
  EXPECT_NO_THROW(report::validate_sweep_json(broken, "r.json"));
  broken = j;
  broken["clean_error"] = 1.0 / static_cast<double>(2 * examples + 1);
  EXPECT_ERROR_CONTAINS(report::validate_sweep_json(broken, "r.json"),
                        "clean_error " + broken["clean_error"].dump() + " is not k/" + std::to_string(examples) +
                            " for a whole number k (a count of the " + std::to_string(examples) + " examples)");
  broken = j;  // a consistent summary of per-pattern values, one of which no count of 7 gives
  broken["examples"] = 7;
  broken["clean_error"] = 0.0;
  eval::RateResult edited;
  edited.rerr = {2.0 / 7, 0.3, 3.0 / 7};
  edited.perturbed_error = edited.rerr;
  eval::summarize(edited);
  nlohmann::json& r1 = broken["results"][1];
  r1["per_pattern"] = r1["perturbed_per_pattern"] = edited.rerr;
  r1["rerr_mean"] = r1["perturbed_error_mean"] = edited.rerr_mean;
  r1["rerr_std"] = edited.rerr_std;
  r1["rerr_min"] = edited.rerr_min;
  r1["rerr_max"] = edited.rerr_max;
  r1.erase("rerr_ci95");
  for (const auto& v : broken["results"][0]["per_pattern"]) {
    ASSERT_EQ(v, 0.0) << "the fixture makes no errors at the first rate, so its values stay counts of 7";
  }
  EXPECT_ERROR_CONTAINS(report::validate_sweep_json(broken, "r.json"),
                        "per_pattern value 0.3 is not k/7 for a whole number k (a count of the 7 examples)");
  r1["per_pattern"][1] = r1["perturbed_per_pattern"][1] = 2.0 / 7;  // (now the summary no longer fits)
  EXPECT_ERROR_CONTAINS(report::validate_sweep_json(broken, "r.json"), "is not the mean of per_pattern");
  // RErr counts the clean model's errors and the perturbed model's: it is below neither.
  broken = j;
  broken["clean_error"] = broken["results"][1]["rerr_min"].get<double>() + 0.01;
  EXPECT_ERROR_CONTAINS(report::validate_sweep_json(broken, "r.json"), "is below the clean error");
  broken = j;
  broken["results"][1]["perturbed_per_pattern"][2] = broken["results"][1]["per_pattern"][2].get<double>() + 0.01;
  EXPECT_ERROR_CONTAINS(report::validate_sweep_json(broken, "r.json"), "pattern 2's RErr");
  broken["results"][1]["perturbed_per_pattern"] = {0.1};
  EXPECT_ERROR_CONTAINS(report::validate_sweep_json(broken, "r.json"), "perturbed_per_pattern must hold one value per pattern");
  broken["results"][1].erase("perturbed_per_pattern");  // (results written before it was kept)
  EXPECT_NO_THROW(report::validate_sweep_json(broken, "r.json"));
  const std::string svg = report::rerr_plot_svg({j, j}, "t");
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(report::sweep_csv(j).find("rate,pattern,seed,rerr,perturbed_error"), std::string::npos);
}

// The 95% interval of the mean is mean ± t(0.975, n-1) · s / sqrt(n) with the sample standard
// deviation s, for the pattern counts people use (t from tables: 4.303 at 3 patterns, 2.064 at 25,
// 2.0096 at 50; the code switches from its table to an expansion past 30 degrees of freedom).
TEST(BitErrorEval, MeanIntervalUsesStudentsT) {
  for (const auto& [n, t] : std::vector<std::pair<int, double>>{{3, 4.303}, {25, 2.064}, {31, 2.042}, {32, 2.0395},
                                                                 {50, 2.0096}, {1000, 1.9623}}) {
    std::vector<double> values;
    for (int i = 0; i < n; ++i) values.push_back(0.1 + 0.01 * ((i * 7) % 5));
    double mean = 0;
    for (double v : values) mean += v;
    mean /= n;
    double ss = 0;
    for (double v : values) ss += (v - mean) * (v - mean);
    const double s = std::sqrt(ss / (n - 1));
    const eval::MeanInterval m = eval::mean_interval(values);
    EXPECT_NEAR(m.mean, mean, 1e-12) << n;
    EXPECT_NEAR(m.std, s, 1e-12) << n;
    EXPECT_NEAR((m.high - m.mean) / (s / std::sqrt(n)), t, 2e-4) << n;
    EXPECT_NEAR((m.mean - m.low) / (s / std::sqrt(n)), t, 2e-4) << n;
  }
}

// Equal per-pattern values can average to one rounding step above themselves (50 x 0.0478): the
// summary keeps the mean within [min, max], so `compare` accepts the file `eval` wrote; the reader
// allows a rounding step for files written before.
TEST(BitErrorEval, AMeanOfEqualValuesStaysWithinThem) {
  eval::RateResult r;
  r.rerr.assign(50, 0.0478);
  r.perturbed_error.assign(50, 0.0478);
  double naive = 0;
  for (double v : r.rerr) naive += v;
  ASSERT_GT(naive / 50, 0.0478) << "the case this test is about";
  eval::summarize(r);
  EXPECT_EQ(r.rerr_min, 0.0478);
  EXPECT_EQ(r.rerr_max, 0.0478);
  EXPECT_EQ(r.rerr_mean, 0.0478);
  // The same in a file, with a value that is a count of its examples (19 of 400: 0.0475).
  auto j = sweep_json_of_trained_mlp(3);
  ASSERT_EQ(j["examples"], 400);
  const double value = 19.0 / 400;
  naive = 0;
  for (int i = 0; i < 50; ++i) naive += value;
  ASSERT_GT(naive / 50, value) << "the case this test is about";
  for (auto& v : j["results"][1]["per_pattern"]) v = value;
  j["results"][1]["rerr_min"] = j["results"][1]["rerr_max"] = value;
  j["results"][1]["rerr_std"] = 0;
  j["results"][1]["rerr_mean"] = naive / 50;  // as files before the fix could hold it
  EXPECT_NO_THROW(report::validate_sweep_json(j, "older.json"));
  j["results"][1]["rerr_mean"] = 0.0476;
  EXPECT_ERROR_CONTAINS(report::validate_sweep_json(j, "older.json"), "is not the mean of per_pattern");
}

// One rate in two spellings is one rate: given twice is an error, not two rows labelled alike.
TEST(BitErrorEval, ARateInPercentAndAsAFractionIsOneRate) {
  EXPECT_EQ(eval::parse_rates("0.7%,0.1%"), (std::vector<double>{0.007, 0.001}));
  EXPECT_ERROR_CONTAINS(eval::parse_rates("0.7%,0.007"), "--rates: bit error rate 0.007 is given twice");
}

// The CSV holds the JSON's per-pattern values exactly (a short decimal form would round e.g. 11/300),
// one row per rate and pattern, each with the seed that drew it.
TEST(BitErrorEval, CsvRowsAreTheJsonValuesExactly) {
  auto j = sweep_json_of_trained_mlp(3);
  j["results"][1]["per_pattern"][2] = 11.0 / 300.0;  // needs 17 digits; the CSV does not validate
  std::istringstream csv(report::sweep_csv(j));
  std::string line;
  ASSERT_TRUE(std::getline(csv, line));
  EXPECT_EQ(line, "rate,pattern,seed,rerr,perturbed_error");
  size_t rows = 0;
  for (const auto& r : j["results"]) {
    for (size_t i = 0; i < r["per_pattern"].size(); ++i, ++rows) {
      ASSERT_TRUE(std::getline(csv, line)) << "row " << rows;
      std::vector<std::string> f;
      std::istringstream fields(line);
      for (std::string x; std::getline(fields, x, ',');) f.push_back(x);
      ASSERT_EQ(f.size(), 5u) << line;
      EXPECT_EQ(std::stod(f[0]), r["rate"].get<double>()) << line;
      EXPECT_EQ(std::stoll(f[1]), static_cast<long long>(i)) << line;
      EXPECT_EQ(std::stoll(f[2]), j["seed"].get<long long>() + static_cast<long long>(i)) << line;
      EXPECT_EQ(std::stod(f[3]), r["per_pattern"][i].get<double>()) << line;
      EXPECT_EQ(std::stod(f[4]), r["perturbed_per_pattern"][i].get<double>()) << line;
    }
  }
  EXPECT_EQ(rows, 6u);
  EXPECT_FALSE(std::getline(csv, line)) << "extra row: " << line;
}
