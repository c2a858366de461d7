#include "bitrobust/train/trainer.h"

#include <ATen/ATen.h>
#include <torch/cuda.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include "bitrobust/common/error.h"
#include "bitrobust/io/model_file.h"
#include "bitrobust/report/progress.h"
#include "bitrobust/train/checkpoint.h"

namespace bitrobust::train {

data::AugmentOptions training_augmentation(const std::string& dataset_name, const TrainOptions& options) {
  data::AugmentOptions augment = options.augment ? data::default_augmentation(dataset_name) : data::AugmentOptions{};
  if (!options.autoaugment) augment.autoaugment = false;
  return augment;
}

double multistep_lr(double base, int64_t step, int64_t total_steps) {
  double lr = base;
  for (int k = 2; k <= 4; ++k) {
    // A milestone that rounds down to step 0 (runs of one or two steps) is no drop: such a run
    // trained at a tenth or a thousandth of --lr from its first step.
    const int64_t milestone = total_steps * k / 5;
    if (milestone > 0 && step >= milestone) lr *= 0.1;
  }
  return lr;
}

namespace {

[[noreturn]] void diverged(const std::string& what, const std::string& where) {
  throw Error("training diverged: " + what + " " + where + " (try a lower --lr); no model was saved");
}

std::string at_step(int64_t epoch, int64_t batch) {
  return "at epoch " + std::to_string(epoch + 1) + ", step " + std::to_string(batch + 1);
}

/// `batch` is the step whose own loss this is; for a mean over the epoch's steps so far (how a GPU run
/// finds it, without a host synchronisation per step) it is the last of them, or -1 at the epoch's end.
void check_finite(double loss, int64_t epoch, int64_t batch, bool mean = false) {
  if (!std::isfinite(loss)) {
    const std::string where = batch < 0 ? "during epoch " + std::to_string(epoch + 1)
                              : mean    ? "at epoch " + std::to_string(epoch + 1) + ", by step " + std::to_string(batch + 1)
                                        : at_step(epoch, batch);
    diverged("the loss is " + nonfinite_text(loss), where);
  }
}

bool parameters_finite(models::Classifier& net) {
  for (const at::Tensor& p : net.parameters()) {
    if (!at::isfinite(p).all().item<bool>()) return false;
  }
  return true;
}

std::string stats_text(double loss, double error, double images_per_second, const StepHooks& hooks) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "loss %.4f  err %5.2f%%  %6.0f img/s", loss, 100 * error, images_per_second);
  return hooks.describe ? std::string(buf) + "  " + hooks.describe() : std::string(buf);
}

}  // namespace

void TrainOptions::validate() const {
  BR_CHECK(epochs > 0, "--epochs must be positive, got ", epochs);
  BR_CHECK(batch_size > 0, "--batch must be positive, got ", batch_size);
  // (bounded as quantization bounds are: Torch applies them as float scalars, and larger ones overflow)
  BR_CHECK(lr > 0 && lr <= 1e30, "--lr must be positive and at most 1e30, got ", lr);
  BR_CHECK(momentum >= 0 && momentum < 1, "--momentum must be in [0, 1), got ", momentum);
  BR_CHECK(weight_decay >= 0 && weight_decay <= 1e30, "--weight-decay must be in [0, 1e30], got ", weight_decay);
  BR_CHECK(max_steps >= 0, "--max-steps must be >= 0 (0 = no limit), got ", max_steps);
}

TrainResult train(models::Classifier& net, const data::Dataset& train_set, const TrainOptions& options,
                  const StepHooks& hooks) {
  options.validate();
  BR_CHECK(train_set.size() > 0, "training set is empty");

  const at::Device device = train_set.images.device();
  net.to(device);
  torch::optim::SGD optimizer(net.parameters(), torch::optim::SGDOptions(options.lr)
                                                    .momentum(options.momentum)
                                                    // (LibTorch refuses Nesterov without momentum:
                                                    // --momentum 0 is plain SGD, the same update)
                                                    .nesterov(options.nesterov && options.momentum > 0)
                                                    .weight_decay(options.weight_decay));
  const int64_t n = train_set.size();
  // (n / batch rounded up without n + batch - 1, which overflows for a batch near int64's range)
  const int64_t steps_per_epoch = n / options.batch_size + (n % options.batch_size != 0);
  // The schedule multiplies the step count by up to 4 (multistep_lr): a count near int64's range
  // wrapped around and moved its learning rate drops (found by a review: --epochs 9164373921480438223).
  constexpr int64_t kMaxSteps = std::numeric_limits<int64_t>::max() / 8;
  BR_CHECK(options.epochs <= kMaxSteps / steps_per_epoch, "--epochs ", options.epochs, " of ", steps_per_epoch,
           " steps each is more steps than a run can count (at most ", kMaxSteps, ")");
  const int64_t total_steps = steps_per_epoch * options.epochs;
  const data::Normalization norm = data::normalization_for(train_set.name);
  const data::AugmentOptions augment = training_augmentation(train_set.name, options);
  const std::string augmentation = augment.describe();
  const data::AugmentOptions* augment_or_none = augment.any() ? &augment : nullptr;

  CheckpointState state;
  if (options.resume && !options.checkpoint.empty() && std::filesystem::exists(options.checkpoint)) {
    state = load_checkpoint(options.checkpoint, net, optimizer, options, augmentation, hooks, device,
                            steps_per_epoch);
    // The checkpoint cannot be trained back: a model of fewer steps than it holds is not on offer.
    BR_CHECK(options.max_steps == 0 || options.max_steps >= state.steps, "--max-steps ", options.max_steps,
             " is below the ", state.steps, " steps checkpoint ", options.checkpoint,
             " holds; resume with --max-steps ", state.steps, " or more (or without it)");
    if (options.progress) std::fprintf(stderr, "resuming from %s after epoch %lld\n", options.checkpoint.c_str(),
                                       static_cast<long long>(state.epochs_done));
    // Not refused, unlike another thread count: moving a run to another machine is a user's right,
    // but the README's promise of an uninterrupted run's weights holds only on the same kernels.
    if (options.progress && device.is_cpu()) {
      const std::string note = resume_kernels_note(options.checkpoint, state.cpu);
      if (!note.empty()) std::fprintf(stderr, "%s\n", note.c_str());
    }
  } else if (options.resume && !options.checkpoint.empty() && options.progress) {
    // (not an error: a script that always passes --resume starts the first time; but said, as a
    // run stopped inside its first epoch leaves no checkpoint and starts again from step 0)
    std::fprintf(stderr, "note: --resume: no checkpoint %s yet (one is written at the end of each epoch): "
                         "training from the start\n", options.checkpoint.c_str());
  }

  TrainResult result;
  result.epochs_done = state.epochs_done;
  result.steps = state.steps;
  result.final_loss = state.final_loss;
  result.final_train_error = state.final_train_error;
  const auto start = std::chrono::steady_clock::now();
  int64_t images_seen = 0;
  constexpr int64_t kWarmupSteps = 10, kGpuCheckSteps = 50;
  int64_t steps_this_call = 0, images_after_warmup = 0;
  auto warm_time = start;
  for (int64_t epoch = state.epochs_done; epoch < options.epochs; ++epoch) {
    // A resumed run may have reached --max-steps already: no epoch begins (its figures would be 0).
    if (options.max_steps > 0 && result.steps >= options.max_steps) break;
    net.train();
    const std::vector<int64_t> order = data::shuffled_indices(n, options.seed, epoch);
    const at::Tensor order_tensor = at::from_blob(const_cast<int64_t*>(order.data()), {n}, at::kLong).to(device);
    report::ProgressBar bar("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(options.epochs),
                            steps_per_epoch, options.progress);
    at::Tensor loss_sum = at::zeros({}, at::TensorOptions().device(device));
    at::Tensor wrong_sum = at::zeros({}, at::TensorOptions().device(device).dtype(at::kLong));
    int64_t epoch_images = 0;
    for (int64_t b = 0; b < steps_per_epoch; ++b) {
      if (options.max_steps > 0 && result.steps >= options.max_steps) break;
      const int64_t begin = b * options.batch_size, end = std::min(n, begin + options.batch_size);
      const at::Tensor idx = order_tensor.slice(0, begin, end);
      const at::Tensor x = data::make_batch(train_set, idx, norm, augment_or_none,
                                            options.seed, static_cast<uint64_t>(epoch));
      const at::Tensor y = data::batch_labels(train_set, idx);
      for (auto& group : optimizer.param_groups()) {
        static_cast<torch::optim::SGDOptions&>(group.options()).lr(multistep_lr(options.lr, result.steps, total_steps));
      }
      optimizer.zero_grad();
      if (hooks.before_forward) {
        try {
          hooks.before_forward();
        } catch (const Error&) {
          // Quantization refuses NaN weights: the last update made them while its loss was still
          // finite (a huge --lr or --weight-decay), which is a divergence at that step, not bad input.
          // (Before this call's first step the weights are the caller's or a checkpoint's: not ours to name.)
          if ((b == 0 && epoch == state.epochs_done) || parameters_finite(net)) throw;
          diverged("the weights hold NaN or infinite values",
                   b > 0 ? "after epoch " + std::to_string(epoch + 1) + ", step " + std::to_string(b)
                         : "after the last step of epoch " + std::to_string(epoch));
        }
      }
      const at::Tensor logits = net.forward(x);
      const at::Tensor loss = at::cross_entropy_loss(logits, y);
      loss.backward();
      // On the CPU reading the loss costs nothing, so every step is checked; on a GPU that would
      // synchronise each step, so the check runs with the progress updates (see below).
      if (device.is_cpu()) check_finite(loss.item<double>(), epoch, b);
      if (hooks.after_backward) {
        try {
          hooks.after_backward(loss, x, y);
        } catch (const Diverged& e) {
          diverged(e.what(), at_step(epoch, b));
        }
      }
      if (hooks.before_step) hooks.before_step();
      optimizer.step();
      if (hooks.after_step) hooks.after_step();
      loss_sum += loss.detach() * (end - begin);
      wrong_sum += logits.argmax(1).ne(y).sum();
      epoch_images += end - begin;
      ++result.steps;
      ++result.steps_run;
      if (++steps_this_call == kWarmupSteps) {
        // On a GPU the host runs steps ahead of the device: the steady window starts when the
        // warm-up steps have run, not when they were queued.
        if (device.is_cuda()) torch::cuda::synchronize();
        warm_time = std::chrono::steady_clock::now();
      }
      if (steps_this_call > kWarmupSteps) images_after_warmup += end - begin;
      // The loss on a GPU is checked with the progress updates, and every kGpuCheckSteps steps
      // where none are shown (--quiet, a log file): a diverged run stops within those steps, not
      // at the epoch's end, for one host synchronisation per check.
      const bool show = bar.due(b + 1);
      if (show || (!device.is_cpu() && (b + 1) % kGpuCheckSteps == 0)) {
        const double mean_loss = loss_sum.item<double>() / epoch_images;
        check_finite(mean_loss, epoch, b, /*mean=*/true);
        if (show) {
          bar.update(b + 1, stats_text(mean_loss, static_cast<double>(wrong_sum.item<int64_t>()) / epoch_images,
                                       epoch_images / std::max(bar.elapsed(), 1e-9), hooks));
        }
      }
    }
    images_seen += epoch_images;
    result.final_loss = epoch_images ? loss_sum.item<double>() / epoch_images : 0;
    check_finite(result.final_loss, epoch, -1);
    result.final_train_error = epoch_images ? static_cast<double>(wrong_sum.item<int64_t>()) / epoch_images : 0;
    // (an epoch that --max-steps ended early shows the steps it ran, and why it stopped)
    const int64_t steps_in_epoch = epoch_images / options.batch_size + (epoch_images % options.batch_size != 0);
    bar.finish(stats_text(result.final_loss, result.final_train_error, epoch_images / std::max(bar.elapsed(), 1e-9),
                          hooks),
               steps_in_epoch,
               // (also when the limit falls on this epoch's end with epochs left to run)
               steps_in_epoch < steps_per_epoch ||
                       (options.max_steps > 0 && result.steps >= options.max_steps && epoch + 1 < options.epochs)
                   ? "(stopped: --max-steps " + std::to_string(options.max_steps) + ")"
                   : "");
    result.epochs_done = epoch + 1;
    if (!options.checkpoint.empty() && epoch_images == n) {
      // The epoch's last step may have left NaN weights behind a finite loss: keep the last good
      // checkpoint rather than replace it with one no run can resume.
      io::check_finite_module(net, "training after epoch " + std::to_string(epoch + 1) + " (no checkpoint written)");
      CheckpointState done;  // (its cpu is this run's: save_checkpoint records this_cpu())
      done.epochs_done = result.epochs_done;
      done.steps = result.steps;
      done.final_loss = result.final_loss;
      done.final_train_error = result.final_train_error;
      save_checkpoint(options.checkpoint, net, optimizer, done, options, augmentation, hooks);
    }
    if (options.max_steps > 0 && result.steps >= options.max_steps) break;
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.images_per_second = images_seen / std::max(result.seconds, 1e-9);
  const double steady = std::chrono::duration<double>(std::chrono::steady_clock::now() - warm_time).count();
  result.steady_images_per_second =
      images_after_warmup > 0 ? images_after_warmup / std::max(steady, 1e-9) : result.images_per_second;
  return result;
}

}  // namespace bitrobust::train
