#include "bitrobust/train/trainer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <torch/torch.h>

#include "bitrobust/common/error.h"
#include "bitrobust/eval/evaluate.h"
#include "bitrobust/quant/model_quantization.h"
#include "bitrobust/train/randbet.h"
#include "archive_util.h"
#include "model_fixtures.h"
#include "test_util.h"

using namespace bitrobust;

namespace {
models::ModelSpec mlp_spec() { return test_util::tiny_mlp_spec(32, "gn"); }
train::TrainOptions quick_options(int64_t epochs) {
  train::TrainOptions o;
  o.epochs = epochs;
  o.batch_size = 32;
  o.lr = 0.05;
  o.seed = 5;
  o.progress = false;
  return o;
}
}  // namespace

TEST(Train, MultistepScheduleDropsAtTwoThreeFourFifths) {
  EXPECT_DOUBLE_EQ(train::multistep_lr(0.05, 0, 100), 0.05);
  EXPECT_DOUBLE_EQ(train::multistep_lr(0.05, 39, 100), 0.05);
  EXPECT_NEAR(train::multistep_lr(0.05, 40, 100), 0.005, 1e-12);
  EXPECT_NEAR(train::multistep_lr(0.05, 60, 100), 0.0005, 1e-12);
  EXPECT_NEAR(train::multistep_lr(0.05, 80, 100), 0.00005, 1e-12);
  EXPECT_NEAR(train::multistep_lr(0.05, 99, 100), 0.00005, 1e-12);
  // Runs too short for a milestone past step 0 start at --lr: one step, two steps (the second
  // after the milestones at 2 * 3/5 and 2 * 4/5 = step 1), three steps (drops at 1, 1 and 2).
  EXPECT_DOUBLE_EQ(train::multistep_lr(0.05, 0, 1), 0.05);
  EXPECT_DOUBLE_EQ(train::multistep_lr(0.05, 0, 2), 0.05);
  EXPECT_NEAR(train::multistep_lr(0.05, 1, 2), 0.0005, 1e-12);
  EXPECT_DOUBLE_EQ(train::multistep_lr(0.05, 0, 3), 0.05);
  EXPECT_NEAR(train::multistep_lr(0.05, 1, 3), 0.0005, 1e-12);
  EXPECT_NEAR(train::multistep_lr(0.05, 2, 3), 0.00005, 1e-12);
}

// Quantization-aware training with clipping, step by step against the formulas: the gradient is
// taken at the quantized (clipped) weights, applied to the float masters by SGD with Nesterov
// momentum and weight decay at the per-batch learning rate, then the masters are clipped; a
// parameter left out of quantization is used and updated as it is.
TEST(Train, QuantAwareStepsAreNesterovSgdOnTheQuantizedGradient) {
  for (const double momentum : {0.9, 0.0}) {  // 0: plain SGD (LibTorch refuses Nesterov without momentum)
    SCOPED_TRACE(momentum);
    auto data = test_util::synthetic_dataset(64);
    const models::ModelSpec spec = test_util::tiny_mlp_spec(16);
    torch::manual_seed(4);
    auto net = models::build_model(spec);
    const quant::QuantScheme scheme = quant::QuantScheme::preset("rquant", 4, 0.1f);
    const quant::ParamSelector selector{{}, {"fc_out.bias"}};
    auto options = quick_options(1);
    options.batch_size = 16;  // 4 steps, with milestones at steps 4*2/5 = 1, 4*3/5 = 2 and 4*4/5 = 3
    options.augment = false;
    options.weight_decay = 0.01;  // large enough that leaving it out shows
    options.momentum = momentum;
    std::vector<std::string> names;
    std::vector<at::Tensor> w;  // the expected float weights, from the initial ones
    for (const auto& item : net->named_parameters()) {
      names.push_back(item.key());
      w.push_back(item.value().detach().clone());
    }
    ASSERT_EQ(names.back(), "fc_out.bias");

    auto reference = models::build_model(spec);  // plain autograd on the weights the step uses
    const std::vector<int64_t> order = data::shuffled_indices(64, options.seed, 0);
    const at::Tensor order_tensor = at::from_blob(const_cast<int64_t*>(order.data()), {64}, at::kLong);
    std::vector<at::Tensor> buffers(w.size());  // the optimizer's momentum buffers
    const double lrs[4] = {0.05, 0.005, 0.0005, 0.00005};
    for (int64_t step = 0; step < 4; ++step) {
      auto quantized = models::build_model(spec);  // the quantized weights, through quantize_model
      {
        torch::NoGradGuard no_grad;
        auto params = quantized->parameters();
        for (size_t i = 0; i < w.size(); ++i) params[i].copy_(w[i]);
      }
      quant::quantize_model(*quantized, scheme, selector).load_clean_weights();
      {
        torch::NoGradGuard no_grad;
        auto params = reference->parameters();
        auto q = quantized->parameters();
        for (size_t i = 0; i < w.size(); ++i) params[i].copy_(q[i]);
      }
      if (step == 0) EXPECT_FALSE(at::equal(reference->parameters()[0], w[0])) << "4 bits change the weights";
      EXPECT_TRUE(at::equal(reference->parameters().back(), w.back())) << "fc_out.bias is not quantized";
      const at::Tensor idx = order_tensor.slice(0, 16 * step, 16 * step + 16);
      const at::Tensor x = data::make_batch(data, idx, data::normalization_for(data.name), nullptr, options.seed, 0);
      reference->zero_grad();
      at::cross_entropy_loss(reference->forward(x), data::batch_labels(data, idx)).backward();
      const double lr = lrs[step];
      auto params = reference->parameters();
      for (size_t i = 0; i < w.size(); ++i) {
        const at::Tensor d = params[i].grad() + options.weight_decay * w[i];
        buffers[i] = step == 0 ? d.clone() : options.momentum * buffers[i] + d;
        w[i] = w[i] - lr * (d + options.momentum * buffers[i]);
        if (names[i] != "fc_out.bias") w[i] = w[i].clamp(-0.1, 0.1);
      }
    }

    quant::QuantAwareTraining qat(*net, scheme, selector);
    const auto result = train::train(*net, data, options, train::robust_training_hooks(qat));
    ASSERT_EQ(result.steps, 4);
    auto trained = net->parameters();
    for (size_t i = 0; i < w.size(); ++i) {
      EXPECT_LT((trained[i] - w[i]).abs().max().item<float>(), 1e-6) << names[i];
    }
    EXPECT_GT(w.back().abs().max().item<float>(), 0.1f) << "the unclipped fc_out.bias should leave [-0.1, 0.1]";
  }
}

TEST(Train, LearnsASeparableProblem) {
  const auto data = test_util::synthetic_dataset(512);
  torch::manual_seed(1);
  auto net = models::build_model(mlp_spec());
  const auto before = eval::evaluate(*net, data).error;
  const auto result = train::train(*net, data, quick_options(3));
  const auto after = eval::evaluate(*net, data).error;
  EXPECT_EQ(result.epochs_done, 3);
  EXPECT_EQ(result.steps, 3 * 16);
  EXPECT_LT(after, 0.05) << "before " << before;
  EXPECT_LT(after, before);
}

TEST(Train, ResumedRunEqualsUninterruptedRun) {
  const auto data = test_util::synthetic_dataset(256);
  test_util::TempDir dir;
  // Uninterrupted: 3 epochs.
  torch::manual_seed(3);
  auto full = models::build_model(mlp_spec());
  auto options = quick_options(3);
  train::train(*full, data, options);
  // Interrupted after epoch 2 (the checkpoint is what a killed run leaves), then resumed.
  torch::manual_seed(3);
  auto first = models::build_model(mlp_spec());
  options.checkpoint = dir.file("run.ckpt");
  options.max_steps = 2 * 8;
  train::train(*first, data, options);
  torch::manual_seed(99);  // the resumed process starts from other random weights
  auto resumed = models::build_model(mlp_spec());
  options.max_steps = 0;
  options.resume = true;
  const auto r = train::train(*resumed, data, options);
  EXPECT_EQ(r.epochs_done, 3);
  EXPECT_EQ(r.steps, 3 * 8);
  auto a = full->named_parameters();
  for (const auto& item : resumed->named_parameters()) {
    EXPECT_TRUE(torch::equal(item.value(), a[item.key()])) << item.key();
  }
}

// A damaged checkpoint is refused rather than resumed into garbage weights (or a NaN model saved).
TEST(Train, DamagedCheckpointsAreRefused) {
  const auto data = test_util::synthetic_dataset(64);  // 2 steps per epoch
  test_util::TempDir dir;
  auto options = quick_options(2);
  options.checkpoint = dir.file("run.ckpt");
  options.max_steps = 2;  // stops after the first epoch, as a killed run would
  auto net = models::build_model(mlp_spec());
  train::train(*net, data, options);
  options.max_steps = 0;
  options.resume = true;
  // Its largest data record cut short, the zip intact.
  ASSERT_GT(test_util::copy_archive(dir.file("run.ckpt"), dir.file("short.ckpt"), /*cut=*/true), 64u);
  auto cut = options;
  cut.checkpoint = dir.file("short.ckpt");
  // (the pickle's storage sizes are checked before LibTorch reads the file: NOTE [Archive pickles])
  EXPECT_ERROR_CONTAINS(train::train(*net, data, cut), "checkpoint " + dir.file("short.ckpt") + " is damaged");
  EXPECT_ERROR_CONTAINS(train::train(*net, data, cut), "which its record of 16 bytes does not hold");
  // Counters no run of these settings writes (here: the data set has grown, so epochs are longer).
  EXPECT_ERROR_CONTAINS(train::train(*net, test_util::synthetic_dataset(96), options),
                        "records 1 epochs and 2 steps, which this run (2 epochs of 3 steps) cannot continue");
  // NaN weights in the checkpoint (every data record overwritten with 0xFF bytes).
  test_util::copy_archive(dir.file("run.ckpt"), dir.file("nan.ckpt"), /*cut=*/false, /*garble=*/true);
  auto nan_options = options;
  nan_options.checkpoint = dir.file("nan.ckpt");
  const std::string message = test_util::error_of([&] { train::train(*net, data, nan_options); });
  EXPECT_TRUE(test_util::contains(message, "checkpoint " + dir.file("nan.ckpt") + ": parameter ")) << message;
  EXPECT_TRUE(test_util::contains(message, "holds NaN or infinite values")) << message;
  // One bit flipped in a weight, the archive otherwise intact (NOTE [Record checksums]).
  const std::string record = test_util::copy_with_flipped_bit(dir.file("run.ckpt"), dir.file("flipped.ckpt"));
  auto flipped = options;
  flipped.checkpoint = dir.file("flipped.ckpt");
  EXPECT_ERROR_CONTAINS(train::train(*net, data, flipped),
                        "checkpoint " + dir.file("flipped.ckpt") + " is damaged: its record " + record + " does not match");
  // A model file given as the checkpoint (they are both Torch archives).
  io::ModelFile model_file;
  model_file.spec = mlp_spec();
  model_file.net = net;
  io::save_model_file(dir.file("model.pt"), model_file);
  auto not_checkpoint = options;
  not_checkpoint.checkpoint = dir.file("model.pt");
  EXPECT_ERROR_CONTAINS(train::train(*net, data, not_checkpoint),
                        "checkpoint " + dir.file("model.pt") + " is a model file, not a training checkpoint");
  // The intact checkpoint still resumes.
  EXPECT_EQ(train::train(*net, data, options).epochs_done, 2);
}

// The epoch's last step may leave NaN weights behind a finite loss: the run stops and the last good
// checkpoint is kept instead of being replaced by one no run can resume.
TEST(Train, NanWeightsAfterAnEpochKeepTheLastGoodCheckpoint) {
  const auto data = test_util::synthetic_dataset(64);  // 2 steps per epoch
  test_util::TempDir dir;
  auto options = quick_options(3);
  options.checkpoint = dir.file("run.ckpt");
  auto net = models::build_model(mlp_spec());
  train::StepHooks poison;
  int steps = 0;
  poison.after_step = [&]() {
    if (++steps == 4) net->parameters()[0].data()[0][0] = std::numeric_limits<float>::quiet_NaN();
  };
  EXPECT_ERROR_CONTAINS(train::train(*net, data, options, poison),
                        "training after epoch 2 (no checkpoint written): parameter ");
  options.resume = true;
  auto resumed = models::build_model(mlp_spec());
  const auto r = train::train(*resumed, data, options);  // from epoch 1's checkpoint
  EXPECT_EQ(r.epochs_done, 3);
  EXPECT_EQ(r.steps, 6);
}

TEST(Train, ResumeWithAnotherSeedOrOtherSettingsIsAnError) {
  const auto data = test_util::synthetic_dataset(64);
  test_util::TempDir dir;
  auto net = models::build_model(mlp_spec());
  auto options = quick_options(2);
  options.checkpoint = dir.file("c.ckpt");
  options.settings = R"({"dataset": "fashion-mnist", "scheme": "u8-asym-tensor-round"})";
  train::train(*net, data, options);
  options.resume = true;
  auto changed = options;
  changed.settings = R"({"dataset": "mnist", "scheme": "u8-asym-tensor-round"})";
  changed.lr = 0.01;
  EXPECT_ERROR_CONTAINS(train::train(*net, data, changed),
                        "belongs to a run with other settings (dataset \"fashion-mnist\" -> \"mnist\", lr 0.05 -> 0.01)");
  auto fewer = options;  // a setting of the checkpoint's run that this run lacks
  fewer.settings = R"({"dataset": "fashion-mnist"})";
  EXPECT_ERROR_CONTAINS(train::train(*net, data, fewer), "scheme \"u8-asym-tensor-round\" -> null");
  auto reseeded = options;
  reseeded.seed = 6;
  EXPECT_ERROR_CONTAINS(train::train(*net, data, reseeded), "belongs to a run with other settings (seed 5 -> 6)");
  reseeded.lr = 0.01;  // the seed is listed with the other differences, first
  EXPECT_ERROR_CONTAINS(train::train(*net, data, reseeded), "other settings (seed 5 -> 6, lr 0.05 -> 0.01)");
  // The same settings resume (nothing left to do after 2 of 2 epochs).
  EXPECT_EQ(train::train(*net, data, options).epochs_done, 2);
}

TEST(Train, ResumeWithAnotherAugmentationIsAnError) {
  // An RGB set named cifar10, whose default augmentation includes AutoAugment.
  auto data = test_util::synthetic_dataset(64);
  data.images = data.images.repeat({1, 3, 1, 1}).contiguous();
  data.name = "cifar10";
  models::ModelSpec spec = mlp_spec();
  spec.in_channels = 3;
  test_util::TempDir dir;
  auto net = models::build_model(spec);
  auto options = quick_options(1);
  options.checkpoint = dir.file("c.ckpt");
  EXPECT_EQ(train::training_augmentation("cifar10", options).describe(), "crop4(mean)+flip+autoaugment+cutout16");
  train::train(*net, data, options);
  options.resume = true;
  auto without = options;
  without.autoaugment = false;
  EXPECT_ERROR_CONTAINS(train::train(*net, data, without),
                        "augmentation \"crop4(mean)+flip+autoaugment+cutout16\" -> \"crop4(mean)+flip+cutout16\"");
  auto none = options;
  none.augment = false;
  EXPECT_ERROR_CONTAINS(train::train(*net, data, none), "-> \"none\"");
  EXPECT_EQ(train::train(*net, data, options).epochs_done, 1);
  // On a set without default augmentation the AutoAugment switch changes nothing.
  EXPECT_EQ(train::training_augmentation("mnist", without).describe(), "none");
}

TEST(Train, DivergenceStopsWithEpochAndStep) {
  const auto data = test_util::synthetic_dataset(64);
  auto net = models::build_model(mlp_spec());
  auto options = quick_options(1);
  train::StepHooks hooks;
  int calls = 0;
  hooks.before_forward = [&]() {
    if (++calls == 2) {
      torch::NoGradGuard g;
      for (auto& p : net->parameters()) p.fill_(std::numeric_limits<float>::quiet_NaN());
    }
  };
  try {
    train::train(*net, data, options, hooks);
    FAIL() << "expected divergence error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("epoch 1, step 2"), std::string::npos) << e.what();
  }
}

// A hook that finds its step's numbers non-finite (RandBET's perturbed loss) throws Diverged; the
// trainer names the epoch and step, as for the clean loss.
TEST(Train, DivergenceFoundByAHookNamesTheEpochAndStep) {
  const auto data = test_util::synthetic_dataset(64);  // 2 steps per epoch
  auto net = models::build_model(mlp_spec());
  train::StepHooks hooks;
  int calls = 0;
  hooks.after_backward = [&](const at::Tensor&, const at::Tensor&, const at::Tensor&) {
    if (++calls == 3) throw train::Diverged("the loss on the weights with bit errors is NaN");
  };
  EXPECT_ERROR_CONTAINS(train::train(*net, data, quick_options(2), hooks),
                        "training diverged: the loss on the weights with bit errors is NaN at epoch 2, step 1 "
                        "(try a lower --lr); no model was saved");
}

// Quantization refuses NaN weights; when the last update made them (while its loss was finite),
// that is a divergence at that step, not a message about a tensor that cannot be quantized.
TEST(Train, NanWeightsFoundByTheNextStepsQuantizationAreADivergenceAtTheStepThatMadeThem) {
  const auto data = test_util::synthetic_dataset(64);  // 2 steps per epoch
  auto net = models::build_model(mlp_spec());
  int steps = 0;
  train::StepHooks hooks;
  hooks.before_forward = [&]() {
    for (const auto& p : net->parameters()) {
      BR_CHECK(at::isfinite(p).all().item<bool>(), "cannot quantize tensor: it holds NaN or infinite values");
    }
  };
  hooks.after_step = [&]() {
    torch::NoGradGuard no_grad;
    if (++steps == 3) net->parameters()[0].view(-1)[0] = std::numeric_limits<float>::quiet_NaN();
  };
  EXPECT_ERROR_CONTAINS(train::train(*net, data, quick_options(3), hooks),
                        "training diverged: the weights hold NaN or infinite values after epoch 2, step 1 ");
  steps = 0;  // made by an epoch's last step, found by the next epoch's first
  hooks.after_step = [&]() {
    torch::NoGradGuard no_grad;
    if (++steps == 2) net->parameters()[0].view(-1)[0] = std::numeric_limits<float>::quiet_NaN();
  };
  auto fresh = models::build_model(mlp_spec());
  net = fresh;
  EXPECT_ERROR_CONTAINS(train::train(*net, data, quick_options(3), hooks),
                        "the weights hold NaN or infinite values after the last step of epoch 1 ");
  // Weights that were NaN before the first step are not the run's doing: the hook's own message.
  torch::NoGradGuard no_grad;
  net->parameters()[0].view(-1)[0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_ERROR_CONTAINS(train::train(*net, data, quick_options(1), hooks), "cannot quantize tensor: it holds NaN");
}

TEST(Train, BadOptionsAreErrors) {
  const auto data = test_util::synthetic_dataset(16);
  auto net = models::build_model(mlp_spec());
  auto options = quick_options(0);
  EXPECT_ERROR_CONTAINS(train::train(*net, data, options), "--epochs must be positive, got 0");
  options = quick_options(1);
  options.batch_size = 0;
  EXPECT_ERROR_CONTAINS(train::train(*net, data, options), "--batch must be positive, got 0");
  auto expect_message = [&](const train::TrainOptions& bad, const std::string& part) {
    try {
      train::train(*net, data, bad);
      ADD_FAILURE() << "no error, expected " << part;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  // A batch near int64's range is one step of all the images (its step count once overflowed).
  options = quick_options(1);
  options.batch_size = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(train::train(*net, data, options).steps, 1);
  // A step count that would overflow the schedule's arithmetic (found by a review).
  options = quick_options(int64_t{9164373921480438223});
  EXPECT_ERROR_CONTAINS(train::train(*net, data, options), "--epochs 9164373921480438223 of 1 steps each is more steps "
                                                           "than a run can count");
  for (double momentum : {-0.1, 1.0, 5.0, std::nan("")}) {
    options = quick_options(1);
    options.momentum = momentum;
    expect_message(options, "--momentum must be in [0, 1)");
  }
  for (double decay : {-1.0, 1e39, std::numeric_limits<double>::infinity(), std::nan("")}) {
    options = quick_options(1);
    options.weight_decay = decay;
    expect_message(options, "--weight-decay must be in [0, 1e30]");
  }
  // (Torch applies both as float scalars: beyond float's range it fails mid-run with its own message)
  for (double lr : {0.0, -1.0, 1e39, std::numeric_limits<double>::infinity(), std::nan("")}) {
    options = quick_options(1);
    options.lr = lr;
    expect_message(options, "--lr must be positive and at most 1e30");
  }
}
