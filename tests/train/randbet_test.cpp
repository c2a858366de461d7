#include "bitrobust/train/randbet.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "bitrobust/common/error.h"
#include "bitrobust/config.h"
#include "bitrobust/eval/bit_error_eval.h"
#include "bitrobust/train/trainer.h"
#include "model_fixtures.h"
#include "test_util.h"

using namespace bitrobust;

namespace {
models::ModelSpec tiny_spec(int64_t hidden = 16) { return test_util::tiny_mlp_spec(hidden); }
/// A tiny quantized network and one batch, to drive RandBET's after_backward with chosen losses.
struct RandBetRig {
  explicit RandBetRig(const std::string& norm = "none")
      : net(models::build_model(test_util::tiny_mlp_spec(16, norm))), qat(*net, quant::QuantScheme::preset("rquant", 8)) {}
  data::Dataset data = test_util::synthetic_dataset(16);
  at::Tensor x = data::make_batch(data, torch::arange(16), data::normalization_for("mnist"), nullptr, 0, 0);
  std::shared_ptr<models::Classifier> net;
  quant::QuantAwareTraining qat;

  /// One step's clean quantized pass, then RandBET's hook told that the clean loss was `loss_value`.
  void step(train::RandomBitErrorTraining& rbet, double loss_value) {
    qat.use_quantized_weights();
    net->zero_grad();
    at::cross_entropy_loss(net->forward(x), data.labels).backward();
    rbet.after_backward(torch::tensor(loss_value), x, data.labels);
    qat.restore_float_weights();
  }
};
std::vector<at::Tensor> grads(models::Classifier& net) {
  std::vector<at::Tensor> out;
  for (auto& p : net.parameters()) out.push_back(p.grad().clone());
  return out;
}
}  // namespace

namespace {
/// The gradient of the loss at the quantized weights with the bit error pattern of `seed` at rate
/// p injected into their codes, computed step by step with the library's parts (the expectation).
std::vector<at::Tensor> perturbed_gradients(models::Classifier& net, quant::QuantAwareTraining& qat, double p,
                                            uint64_t seed, const at::Tensor& x, const at::Tensor& y) {
  qat.use_quantized_weights();
  {
    torch::NoGradGuard g;
    std::vector<bits::CodeTensor> codes;
    std::vector<quant::QuantizedTensor> q;
    for (size_t i = 0; i < qat.params().size(); ++i) {
      q.push_back(quant::quantize(qat.master_weights()[i], qat.scheme(), qat.names()[i]));
      codes.push_back({qat.names()[i], q[i].codes, at::empty_like(q[i].codes), qat.scheme().bits, static_cast<int64_t>(i)});
    }
    EXPECT_GT(bits::inject_bit_errors(codes, bits::ErrorModel::parse("random", p), seed), 0);
    for (size_t i = 0; i < q.size(); ++i) {
      q[i].codes = codes[i].out;
      at::Tensor param = qat.params()[i];
      quant::dequantize_into(q[i], param);
    }
  }
  net.zero_grad();
  at::cross_entropy_loss(net.forward(x), y).backward();
  const auto out = grads(net);
  qat.restore_float_weights();
  return out;
}
/// The gradient of the clean quantized pass, then RandBET's hook after it: (clean, after the hook).
std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>> step_with_hook(models::Classifier& net,
                                                                           quant::QuantAwareTraining& qat,
                                                                           train::RandomBitErrorTraining& rbet,
                                                                           const at::Tensor& x, const at::Tensor& y) {
  qat.use_quantized_weights();
  net.zero_grad();
  const at::Tensor loss = at::cross_entropy_loss(net.forward(x), y);
  loss.backward();
  auto clean = grads(net);
  rbet.after_backward(loss, x, y);
  auto after = grads(net);
  qat.restore_float_weights();
  return {std::move(clean), std::move(after)};
}
}  // namespace

namespace {
/// A tiny 8-bit network, one batch of 32, and RandBET at 5% from the first step, clamp 0.01.
struct GradientRig {
  data::Dataset data = test_util::synthetic_dataset(32);
  at::Tensor x = data::make_batch(data, torch::arange(32), data::normalization_for(data.name), nullptr, 0, 0);
  at::Tensor y = data.labels;
  std::shared_ptr<models::Classifier> net = seeded_net();
  quant::QuantAwareTraining qat{*net, quant::QuantScheme::preset("rquant", 8)};
  train::RandomBitErrorTraining rbet;
  explicit GradientRig(const std::string& mode) : rbet(*net, qat, options(mode)) {}
  static std::shared_ptr<models::Classifier> seeded_net() {
    torch::manual_seed(4);
    return models::build_model(tiny_spec());
  }
  static train::RandBETOptions options(const std::string& mode) {
    train::RandBETOptions o;
    o.rate = 0.05;
    o.start_loss = 100;  // active from the first step
    o.gradient_clamp = 0.01;
    o.mode = mode;
    return o;
  }
  std::vector<at::Tensor> perturbed(int64_t step) { return perturbed_gradients(*net, qat, 0.05, rbet.pattern_seed(step), x, y); }
  std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>> step() { return step_with_hook(*net, qat, rbet, x, y); }
};
}  // namespace

TEST(RandBET, UpdateIsTheMeanOfCleanAndClampedPerturbedGradients) {
  GradientRig rig("average");
  auto& rbet = rig.rbet;
  const auto perturbed = rig.perturbed(0);
  const auto [clean, actual] = rig.step();
  EXPECT_TRUE(rbet.active());
  bool any_clamped = false;
  for (size_t i = 0; i < actual.size(); ++i) {
    const at::Tensor expected = (clean[i] + perturbed[i].clamp(-0.01, 0.01)) / 2;
    EXPECT_TRUE(torch::allclose(actual[i], expected, 1e-6, 1e-8)) << i;
    any_clamped = any_clamped || perturbed[i].abs().max().item<float>() > 0.01f;
  }
  EXPECT_TRUE(any_clamped) << "the test should exercise the clamp";
}

// Inside train::train: the first step's update is SGD with Nesterov momentum on the mean of the clean
// and the clamped perturbed gradient of that step's batch and pattern (found by a review: the hook
// was tested alone, not that its gradient reaches the optimizer).
TEST(RandBET, TheTrainersFirstStepUsesTheAveragedGradient) {
  const data::Dataset data = test_util::synthetic_dataset(64);
  train::TrainOptions o;
  o.epochs = 1;
  o.batch_size = 16;  // 4 steps in the epoch: its first learning rate drop comes after step 0
  o.lr = 0.05;
  o.momentum = 0.9;
  o.weight_decay = 0.0;
  o.seed = 6;
  o.max_steps = 1;
  o.augment = false;
  o.progress = false;
  train::RandBETOptions r;
  r.rate = 0.05;
  r.start_loss = 100;  // from the first step
  r.gradient_clamp = 0.01;
  r.seed = o.seed;

  // The expectation, from the same initial weights, with the library's parts.
  torch::manual_seed(4);
  auto reference = models::build_model(tiny_spec());
  quant::QuantAwareTraining reference_qat(*reference, quant::QuantScheme::preset("rquant", 8));
  train::RandomBitErrorTraining reference_rbet(*reference, reference_qat, r);
  std::vector<at::Tensor> w0;
  for (const auto& p : reference->parameters()) w0.push_back(p.detach().clone());
  const std::vector<int64_t> order = data::shuffled_indices(64, o.seed, 0);
  const at::Tensor idx = at::from_blob(const_cast<int64_t*>(order.data()), {64}, at::kLong).slice(0, 0, 16).clone();
  const at::Tensor x = data::make_batch(data, idx, data::normalization_for(data.name), nullptr, o.seed, 0);
  const at::Tensor y = data::batch_labels(data, idx);
  const auto perturbed = perturbed_gradients(*reference, reference_qat, r.rate, reference_rbet.pattern_seed(0), x, y);
  reference_qat.use_quantized_weights();
  reference->zero_grad();
  at::cross_entropy_loss(reference->forward(x), y).backward();
  const auto clean = grads(*reference);
  reference_qat.restore_float_weights();

  torch::manual_seed(4);
  auto net = models::build_model(tiny_spec());
  quant::QuantAwareTraining qat(*net, quant::QuantScheme::preset("rquant", 8));
  train::RandomBitErrorTraining rbet(*net, qat, r);
  ASSERT_EQ(train::train(*net, data, o, train::robust_training_hooks(qat, &rbet)).steps, 1);
  EXPECT_EQ(rbet.perturbed_steps(), 1);
  const auto trained = net->parameters();
  bool any_clamped = false, any_differs_from_clean_step = false;
  for (size_t i = 0; i < w0.size(); ++i) {
    const at::Tensor g = (clean[i] + perturbed[i].clamp(-0.01, 0.01)) / 2;
    // Nesterov's first step: the buffer is g, the update g + momentum * g.
    const at::Tensor expected = w0[i] - o.lr * (1 + o.momentum) * g;
    EXPECT_TRUE(torch::allclose(trained[i], expected, 1e-5, 1e-7))
        << i << ": off by " << (trained[i] - expected).abs().max().item<float>();
    any_clamped = any_clamped || perturbed[i].abs().max().item<float>() > 0.01f;
    const at::Tensor clean_step = w0[i] - o.lr * (1 + o.momentum) * clean[i];
    any_differs_from_clean_step = any_differs_from_clean_step || !torch::allclose(trained[i], clean_step, 1e-5, 1e-7);
  }
  EXPECT_TRUE(any_clamped) << "the test should exercise the clamp";
  EXPECT_TRUE(any_differs_from_clean_step) << "a clean step would pass for a RandBET step";
}

// Alternate mode: a clean step keeps the clean gradient; the next step's update is the clamped
// gradient of its own pattern alone (seeded by its step), not a mean with the clean one.
TEST(RandBET, AlternateStepsUseTheCleanThenTheClampedPerturbedGradient) {
  GradientRig rig("alternate");
  auto& rbet = rig.rbet;
  const auto [clean0, after0] = rig.step();
  for (size_t i = 0; i < after0.size(); ++i) EXPECT_TRUE(at::equal(after0[i], clean0[i])) << i;
  EXPECT_EQ(rbet.perturbed_steps(), 0);

  const auto perturbed = rig.perturbed(1);
  const auto [clean1, after1] = rig.step();
  EXPECT_EQ(rbet.perturbed_steps(), 1);
  bool any_clamped = false, differs_from_mean = false;
  for (size_t i = 0; i < after1.size(); ++i) {
    EXPECT_TRUE(torch::allclose(after1[i], perturbed[i].clamp(-0.01, 0.01), 1e-6, 1e-8)) << i;
    any_clamped = any_clamped || perturbed[i].abs().max().item<float>() > 0.01f;
    const at::Tensor mean = (clean1[i] + perturbed[i].clamp(-0.01, 0.01)) / 2;
    differs_from_mean = differs_from_mean || !torch::allclose(after1[i], mean, 1e-4, 1e-6);
  }
  EXPECT_TRUE(any_clamped) << "the test should exercise the clamp";
  EXPECT_TRUE(differs_from_mean);
}

TEST(RandBET, CurriculumStartsBelowTheThresholdAndStays) {
  RandBetRig rig;
  train::RandBETOptions o;
  o.start_loss = 1.0;
  train::RandomBitErrorTraining rbet(*rig.net, rig.qat, o);
  auto step = [&](double loss_value) { rig.step(rbet, loss_value); };
  step(1.5);
  step(1.0);  // not below the threshold
  EXPECT_FALSE(rbet.active());
  EXPECT_EQ(rbet.perturbed_steps(), 0);
  step(0.99);
  EXPECT_TRUE(rbet.active());
  step(3.0);  // stays on
  EXPECT_EQ(rbet.perturbed_steps(), 2);
}

// NOTE [RandBET curricula]: the decision for the next step is errors iff clean < 1.15 T and
// (clean + perturbed) / 2 <= T, with perturbed = 0 after a step without errors. The tiny network's
// perturbed loss (about ln 10) is far above T = 0.01 and far below T = 100: the decisions follow.
TEST(RandBET, ReferenceCurriculumDecidesEachNextStepFromBothLosses) {
  RandBetRig rig;
  train::RandBETOptions o;
  o.curriculum = "reference";
  o.start_loss = 1.0;
  train::RandomBitErrorTraining rbet(*rig.net, rig.qat, o);
  auto step = [&](double loss_value) { rig.step(rbet, loss_value); };
  EXPECT_FALSE(rbet.active());  // the first step has no errors
  step(0.5);                    // below 1.15 T: the next step has errors
  EXPECT_EQ(rbet.perturbed_steps(), 0);
  EXPECT_TRUE(rbet.active());
  step(1.16);  // a step with errors; above 1.15 T: the next has none
  EXPECT_EQ(rbet.perturbed_steps(), 1);
  EXPECT_FALSE(rbet.active());
  step(1.14);  // between T and 1.15 T, after a step without errors: the next has errors
  EXPECT_TRUE(rbet.active());
  EXPECT_EQ(rbet.perturbed_steps(), 1);

  o.start_loss = 0.01;  // errors hurt too much: they are on every second step
  train::RandomBitErrorTraining low(*rig.net, rig.qat, o);
  for (int i = 0; i < 6; ++i) {
    rig.step(low, 0.0);
    EXPECT_EQ(low.active(), i % 2 == 0) << i;
  }
  EXPECT_EQ(low.perturbed_steps(), 3);

  o.start_loss = 100;  // the perturbed loss never stops them; only a clean loss of 115 or more does
  train::RandomBitErrorTraining high(*rig.net, rig.qat, o);
  for (const double clean : {114.0, 114.0, 114.0, 116.0, 114.0}) rig.step(high, clean);
  EXPECT_EQ(high.perturbed_steps(), 3);  // steps 2, 3 and 4
  EXPECT_TRUE(high.active());
  o.mode = "alternate";  // on from step 2, where the alternation starts with its clean step
  train::RandomBitErrorTraining alternate(*rig.net, rig.qat, o);
  for (int i = 0; i < 6; ++i) rig.step(alternate, 114.0);
  EXPECT_EQ(alternate.state(), R"({"active":true,"active_steps":5,"perturbed_steps":2,"step":6})");
  o.mode = "average";
  // The state of a curriculum that was on and is off now restores under "reference" only.
  const std::string off = R"({"active":false,"active_steps":3,"perturbed_steps":3,"step":4})";
  train::RandomBitErrorTraining restored(*rig.net, rig.qat, o);
  EXPECT_NO_THROW(restored.restore_state(off));
  EXPECT_EQ(restored.state(), off);
  o.curriculum = "once";
  train::RandomBitErrorTraining once(*rig.net, rig.qat, o);
  EXPECT_ERROR_CONTAINS(once.restore_state(off), "is inconsistent");
  o.curriculum = "sometimes";
  EXPECT_ERROR_CONTAINS(o.validate(), "--randbet-curriculum must be once or reference, got 'sometimes'");
}

TEST(RandBET, PerturbedPassLeavesRunningStatisticsAsTheCleanPassLeftThem) {
  // As the reference, whose perturbed pass runs on a copy of the model: BatchNorm's running
  // statistics come from the clean passes only.
  for (const std::string norm : {"bn", "rebn"}) {
    SCOPED_TRACE(norm);
    torch::manual_seed(5);
    RandBetRig plain(norm);
    torch::manual_seed(5);
    RandBetRig robust(norm);
    train::RandBETOptions o;
    o.rate = 0.05;
    o.start_loss = 100;
    train::RandomBitErrorTraining rbet(*robust.net, robust.qat, o);

    std::vector<at::Tensor> initial;
    for (const at::Tensor& b : plain.net->buffers()) initial.push_back(b.clone());
    ASSERT_EQ(initial.size(), 2u);  // running mean and variance of the hidden layer's norm
    plain.qat.use_quantized_weights();
    at::cross_entropy_loss(plain.net->forward(plain.x), plain.data.labels).backward();
    plain.qat.restore_float_weights();
    robust.step(rbet, 0.5);
    ASSERT_EQ(rbet.perturbed_steps(), 1);

    const std::vector<at::Tensor> after_clean = plain.net->buffers(), after_robust = robust.net->buffers();
    for (size_t i = 0; i < initial.size(); ++i) {
      EXPECT_FALSE(torch::equal(after_clean[i], initial[i]));  // the clean pass moves them
      EXPECT_TRUE(torch::equal(after_robust[i], after_clean[i]));
    }
  }
}

TEST(RandBET, AlternateModePerturbsEverySecondStep) {
  const auto data = test_util::synthetic_dataset(16);
  const at::Tensor x = data::make_batch(data, torch::arange(16), data::normalization_for("mnist"), nullptr, 0, 0);
  auto net = models::build_model(tiny_spec());
  quant::QuantAwareTraining qat(*net, quant::QuantScheme::preset("rquant", 8));
  train::RandBETOptions o;
  o.start_loss = 100;
  o.mode = "alternate";
  train::RandomBitErrorTraining rbet(*net, qat, o);
  for (int i = 0; i < 6; ++i) {
    qat.use_quantized_weights();
    net->zero_grad();
    const auto loss = at::cross_entropy_loss(net->forward(x), data.labels);
    loss.backward();
    rbet.after_backward(loss, x, data.labels);
    qat.restore_float_weights();
  }
  EXPECT_EQ(rbet.perturbed_steps(), 3);
}

// A NaN perturbed loss would pass the gradient clamp into the update: the step stops instead.
TEST(RandBET, NonFinitePerturbedLossIsADivergence) {
  RandBetRig rig;
  train::RandBETOptions o;
  o.start_loss = 100;
  o.rate = 0.01;
  train::RandomBitErrorTraining rbet(*rig.net, rig.qat, o);
  rig.x = at::full_like(rig.x, std::numeric_limits<float>::quiet_NaN());
  try {
    rig.step(rbet, 0.5);
    ADD_FAILURE() << "expected train::Diverged";
  } catch (const train::Diverged& e) {
    EXPECT_EQ(std::string(e.what()), "the loss on the weights with bit errors is NaN");
  }
}

// Updates that overflow the weights while the loss is still finite (found by a review with
// --lr 1e20 --weight-decay 1e20) stop as a divergence naming the step, not as a quantization error.
TEST(WeightClipping, OverflowingWeightsStopTheRunAsADivergence) {
  const auto data = test_util::synthetic_dataset(64);
  torch::manual_seed(8);
  auto net = models::build_model(tiny_spec());
  quant::QuantAwareTraining qat(*net, quant::QuantScheme::preset("rquant", 8));
  train::TrainOptions o;
  o.epochs = 2;
  o.batch_size = 32;
  o.lr = 1e20;
  o.weight_decay = 1e20;
  o.progress = false;
  try {
    train::train(*net, data, o, train::robust_training_hooks(qat));
    ADD_FAILURE() << "expected a divergence";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("training diverged: ", 0), 0u) << e.what();
    EXPECT_NE(std::string(e.what()).find(" step "), std::string::npos) << e.what();
  }
}

TEST(RandBET, TrainingSeedsNeverMeetEvaluationSeeds) {
  auto net = models::build_model(tiny_spec());
  quant::QuantAwareTraining qat(*net, quant::QuantScheme::preset("rquant", 8));
  train::RandomBitErrorTraining rbet(*net, qat, {});
  for (int64_t s = 0; s < 1000; ++s) EXPECT_GE(rbet.pattern_seed(s), uint64_t{1} << 63);
  EXPECT_NE(rbet.pattern_seed(0), rbet.pattern_seed(1));
}

TEST(RandBET, BadOptionsAreErrors) {
  train::RandBETOptions o;
  o.rate = 1.5;
  EXPECT_ERROR_CONTAINS(o.validate(), "--randbet: bit error rate 1.5 is outside [0, 1]");
  o = {};
  o.rate = -0.1;
  EXPECT_ERROR_CONTAINS(o.validate(), "--randbet: bit error rate -0.1 is outside [0, 1]");
  o = {};
  o.mode = "sometimes";
  EXPECT_ERROR_CONTAINS(o.validate(), "--randbet-mode must be average or alternate, got 'sometimes'");
  o = {};
  o.start_loss = 0;
  EXPECT_ERROR_CONTAINS(o.validate(), "--randbet-start must be a loss > 0, got 0");
  o = {};
  o.error_model = "cosmic";
  EXPECT_ERROR_CONTAINS(o.validate(), "cosmic");
  // An error model the codes cannot carry fails when training is set up, not when the curriculum
  // first injects errors.
  auto net = models::build_model(tiny_spec());
  quant::QuantAwareTraining qat(*net, quant::QuantScheme::preset("rquant", 4));
  o = {};
  o.rate = 0.01;
  o.error_model = "lsb9";
  EXPECT_ERROR_CONTAINS(train::RandomBitErrorTraining(*net, qat, o), "lsb9 needs at least 9 bits, codes have 4");
  // The perturbed pass reuses the clean quantized pass's ranges: without it, a clear error.
  o = {};
  o.start_loss = 1e30;
  train::RandomBitErrorTraining randbet(*net, qat, o);
  const auto data = test_util::synthetic_dataset(8);
  EXPECT_ERROR_CONTAINS(randbet.after_backward(at::ones({}), data.images, data.labels),
                        "the clean quantized pass (use_quantized_weights) must run before after_backward");
}

namespace {
/// Trains a tiny MLP for 3 epochs of 7 steps with QAT and RandBET in alternate mode (an odd
/// number of steps per epoch, so the resumed epoch starts in the middle of the clean/perturbed
/// alternation); with `interrupt`, stops after the first epoch and resumes in a new process-like
/// setting (other initial weights, fresh QAT and RandBET objects).
struct RandBetRun {
  std::vector<at::Tensor> weights;
  int64_t perturbed_steps = 0;
  std::string state;
};
RandBetRun train_randbet_run(const data::Dataset& data, const std::string& checkpoint, bool interrupt) {
  auto run_once = [&](uint64_t init_seed, int64_t max_steps, bool resume, RandBetRun& out) {
    torch::manual_seed(init_seed);
    auto net = models::build_model(tiny_spec());
    quant::QuantAwareTraining qat(*net, quant::QuantScheme::preset("rquant", 8, 0.1f));
    train::RandBETOptions r;
    r.rate = 0.05;
    r.start_loss = 100;
    r.mode = "alternate";
    train::RandomBitErrorTraining rbet(*net, qat, r);
    train::TrainOptions o;
    o.epochs = 3;
    o.batch_size = 32;
    o.progress = false;
    o.checkpoint = checkpoint;
    o.max_steps = max_steps;
    o.resume = resume;
    train::train(*net, data, o, train::robust_training_hooks(qat, &rbet));
    out.weights.clear();
    for (const auto& p : net->parameters()) out.weights.push_back(p.detach().clone());
    out.perturbed_steps = rbet.perturbed_steps();
    out.state = rbet.state();
  };
  RandBetRun out;
  if (interrupt) {
    run_once(3, 7, false, out);
    run_once(99, 0, true, out);
  } else {
    run_once(3, 0, false, out);
  }
  return out;
}
}  // namespace

// The pattern seeds come from RandBET's step count, and the curriculum and the alternation are
// state too: all of it travels in the checkpoint.
TEST(RandBET, ResumedRunEqualsUninterruptedRun) {
  const auto data = test_util::synthetic_dataset(224);  // 7 steps per epoch
  test_util::TempDir dir;
  const RandBetRun full = train_randbet_run(data, "", false);
  const RandBetRun resumed = train_randbet_run(data, dir.file("run.ckpt"), true);
  EXPECT_EQ(full.perturbed_steps, 10);  // steps 2, 4, ..., 20 of 21
  EXPECT_EQ(resumed.perturbed_steps, full.perturbed_steps);
  EXPECT_EQ(resumed.state, full.state);
  ASSERT_EQ(resumed.weights.size(), full.weights.size());
  for (size_t i = 0; i < full.weights.size(); ++i) EXPECT_TRUE(full.weights[i].equal(resumed.weights[i])) << i;
}

TEST(RandBET, StateRoundTripsAndBadStatesAreErrors) {
  RandBetRig rig;
  train::RandBETOptions o;
  o.start_loss = 1.0;
  train::RandomBitErrorTraining before(*rig.net, rig.qat, o);
  auto step = [&](train::RandomBitErrorTraining& rbet, double loss_value) { rig.step(rbet, loss_value); };
  step(before, 2.0);
  step(before, 0.5);  // the curriculum switches on
  EXPECT_EQ(before.state(), R"({"active":true,"active_steps":1,"perturbed_steps":1,"step":2})");
  // A restored object stays on above the threshold, as the original would.
  train::RandomBitErrorTraining after(*rig.net, rig.qat, o);
  after.restore_state(before.state());
  EXPECT_TRUE(after.active());
  step(after, 3.0);
  EXPECT_EQ(after.perturbed_steps(), 2);
  EXPECT_EQ(after.state(), R"({"active":true,"active_steps":2,"perturbed_steps":2,"step":3})");

  train::RandomBitErrorTraining fresh(*rig.net, rig.qat, o);
  EXPECT_ERROR_CONTAINS(fresh.restore_state("not json"), "'step' must be a count >= 0");
  EXPECT_ERROR_CONTAINS(fresh.restore_state(R"({"step":-1,"active":false,"active_steps":0,"perturbed_steps":0})"),
                        "'step' must be a count >= 0");
  EXPECT_ERROR_CONTAINS(fresh.restore_state(R"({"step":3,"active_steps":0,"perturbed_steps":0})"),
                        "'active' must be true or false");
  EXPECT_ERROR_CONTAINS(fresh.restore_state(R"({"step":3,"active":false,"active_steps":2,"perturbed_steps":2})"),
                        "is inconsistent");
  EXPECT_ERROR_CONTAINS(fresh.restore_state(before.state(), 5), "is for step 2, not for the 5 steps the checkpoint");
  EXPECT_EQ(fresh.state(), R"({"active":false,"active_steps":0,"perturbed_steps":0,"step":0})");  // untouched
}

// A checkpoint without the state (an older version's) is refused rather than resumed inexactly.
TEST(RandBET, ResumingACheckpointWithoutItsStateIsAnError) {
  const auto data = test_util::synthetic_dataset(64);
  test_util::TempDir dir;
  torch::manual_seed(3);
  auto net = models::build_model(tiny_spec());
  quant::QuantAwareTraining qat(*net, quant::QuantScheme::preset("rquant", 8));
  train::RandBETOptions r;
  r.start_loss = 100;
  train::RandomBitErrorTraining rbet(*net, qat, r);
  train::TrainOptions o;
  o.epochs = 2;
  o.batch_size = 32;
  o.progress = false;
  o.checkpoint = dir.file("old.ckpt");
  o.max_steps = 2;
  train::StepHooks without_state = train::robust_training_hooks(qat, &rbet);
  without_state.save_state = nullptr;
  train::train(*net, data, o, without_state);
  o.max_steps = 0;
  o.resume = true;
  EXPECT_ERROR_CONTAINS(train::train(*net, data, o, train::robust_training_hooks(qat, &rbet)),
                        "has no RandBET state (step count, curriculum): it was written by an older version");
}

TEST(WeightClipping, EveryQuantizedParameterStaysWithinTheBoundAfterEveryStep) {
  const auto data = test_util::synthetic_dataset(128);
  torch::manual_seed(8);
  auto net = models::build_model(tiny_spec());
  quant::QuantAwareTraining qat(*net, quant::QuantScheme::preset("rquant", 8, 0.05f));
  float largest = 0.0f;  // (the bound must bind: some initial weight lies outside it)
  for (const auto& p : qat.params()) largest = std::max(largest, p.abs().max().item<float>());
  ASSERT_GT(largest, 0.05f);
  // The hooks' own after_step (which must clip), with the check after it.
  train::StepHooks hooks = train::robust_training_hooks(qat);
  ASSERT_TRUE(hooks.after_step);
  const std::function<void()> clipping = hooks.after_step;
  int checks = 0;
  hooks.after_step = [&]() {
    clipping();
    for (const auto& p : qat.params()) EXPECT_LE(p.abs().max().item<float>(), 0.05f);
    ++checks;
  };
  train::TrainOptions o;
  o.epochs = 2;
  o.batch_size = 32;
  o.lr = 0.5;
  o.progress = false;
  train::train(*net, data, o, hooks);
  EXPECT_EQ(checks, 8);
}

#ifdef BITROBUST_WITH_CUDA
// The trainer moves the network after quantization-aware training has been set up: the master
// weights must follow it to the device instead of staying on the host.
TEST(WeightClippingCuda, QuantAwareTrainingKeepsMastersOnTheParametersDevice) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  models::ModelSpec spec;
  spec.arch = "mlp";
  auto net = models::build_model(spec);
  quant::QuantAwareTraining qat(*net, quant::QuantScheme::preset("rquant", 8, 0.1f));
  net->to(at::kCUDA);
  qat.use_quantized_weights();
  for (const at::Tensor& m : qat.master_weights()) EXPECT_TRUE(m.is_cuda());
  qat.restore_float_weights();
  for (size_t i = 0; i < qat.params().size(); ++i) EXPECT_TRUE(at::equal(qat.params()[i], qat.master_weights()[i]));
}
#endif

// Fashion-MNIST, fixed seeds, a few hundred steps: clipping + RandBET 1% must be more robust at
// p = 1% than the same quantized run without them (the reference's central finding).
TEST(RandBET, ClippingAndRandBetReduceRErrOnFashionMnist) {
  data::Dataset train_set, test_set;
  try {
    train_set = data::load_dataset({"fashion-mnist", "train", "", "holdout"});
    test_set = data::load_dataset({"fashion-mnist", "test", "", "holdout"}).head(2000);
  } catch (const Error& e) {
    GTEST_SKIP() << e.what();
  }
  auto run = [&](bool robust) {
    models::ModelSpec s = tiny_spec(128);
    s.height = s.width = 28;
    s.num_classes = 10;
    s.norm = "regn";
    torch::manual_seed(1);
    auto net = models::build_model(s);
    const auto scheme = quant::QuantScheme::preset("rquant", 8, robust ? 0.1f : 0.0f);
    quant::QuantAwareTraining qat(*net, scheme);
    train::RandBETOptions ro;
    ro.rate = 0.01;
    train::RandomBitErrorTraining rbet(*net, qat, ro);
    const train::StepHooks hooks = train::robust_training_hooks(qat, robust ? &rbet : nullptr);
    train::TrainOptions o;
    o.epochs = 1;
    o.batch_size = 128;
    o.max_steps = 300;
    o.progress = false;
    train::train(*net, train_set, o, hooks);
    if (robust) EXPECT_GT(rbet.perturbed_steps(), 100);
    const auto q = quant::quantize_model(*net, scheme);
    eval::SweepOptions so;
    so.rates = {0.01};
    so.patterns = 5;
    so.progress = false;
    return eval::run_sweep(*net, q, test_set, so);
  };
  const auto plain = run(false);
  const auto robust = run(true);
  std::printf("[ info ] rquant8: clean %.4f RErr@1%% %.4f; +clip0.1+RandBET1%%: clean %.4f RErr@1%% %.4f\n",
              plain.clean_error, plain.results[0].rerr_mean, robust.clean_error, robust.results[0].rerr_mean);
  EXPECT_LT(robust.results[0].rerr_mean, plain.results[0].rerr_mean);
}
