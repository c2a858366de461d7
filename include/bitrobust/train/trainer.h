#pragma once
// The training loop: SGD with Nesterov momentum, multi-step learning rate stepped per batch,
// per-epoch atomic checkpoints and exact resume; quantization-aware training, weight clipping and
// random bit error training (RandBET) plug in through TrainOptions.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>

#include "bitrobust/common/error.h"
#include "bitrobust/data/dataset.h"
#include "bitrobust/models/models.h"

namespace bitrobust::train {

struct TrainOptions {
  int64_t epochs = 3;
  int64_t batch_size = 128;
  double lr = 0.05;
  double momentum = 0.9;
  bool nesterov = true;
  double weight_decay = 5e-4;
  uint64_t seed = 1;            ///< model initialisation, shuffling and augmentation
  bool augment = true;          ///< the data set's default augmentation (none for MNIST-like sets)
  bool autoaugment = true;      ///< include AutoAugment where the default has it (CIFAR-10)
  std::string checkpoint;       ///< written atomically after every epoch ("" = none)
  bool resume = false;          ///< continue from `checkpoint` if it exists
  bool progress = true;         ///< progress bar on stderr
  int64_t max_steps = 0;        ///< stop after this many steps (0 = all); for tests and timing
  /// What else the run trains with that a resumed run must share (data set, model, scheme,
  /// RandBET...), as a JSON object; the schedule above is added to it. Stored in the checkpoint, and
  /// a resume whose settings differ is an error listing the differences.
  std::string settings = "{}";
  /// Throws bitrobust::Error naming the option (--epochs, --lr, ...) that is out of range.
  void validate() const;
};

/// The augmentation a run with these options trains with on `dataset_name` (none when
/// options.augment is false; the data set's default, less AutoAugment if options.autoaugment is false).
data::AugmentOptions training_augmentation(const std::string& dataset_name, const TrainOptions& options);

/// Thrown by a step hook that finds the step's numbers non-finite (RandBET's loss on the perturbed
/// weights); what() says what was found, and train() rethrows it as a divergence naming the epoch
/// and step.
class Diverged : public Error {
 public:
  using Error::Error;
};

/// A loss that is not finite as a message says it: "NaN", "+infinity" or "-infinity" (not
/// std::to_string's "-nan", whose sign means nothing to a user).
inline std::string nonfinite_text(double value) {
  return value != value ? "NaN" : value > 0 ? "+infinity" : "-infinity";
}

/// Per-step hooks used by quantization-aware and robust training (all optional).
struct StepHooks {
  /// Called before the forward pass: e.g. replace weights by their quantized values.
  std::function<void()> before_forward;
  /// Called after the clean backward pass with the clean loss and the batch; may run extra
  /// passes and rewrite the gradients (RandBET).
  std::function<void(const at::Tensor& loss, const at::Tensor& x, const at::Tensor& y)> after_backward;
  /// Called after the optimizer step: e.g. restore nothing, clip weights.
  std::function<void()> after_step;
  /// Called right before the optimizer step, after after_backward: restore float weights.
  std::function<void()> before_step;
  /// State the hooks carry from step to step (RandBET's step count and curriculum), as JSON text:
  /// saved in every checkpoint and given back to restore_state on resume, so that a resumed run
  /// continues exactly. A checkpoint without it cannot resume hooks that have state.
  std::function<std::string()> save_state;
  /// Given the saved text and the checkpoint's step count, which the state must agree with.
  std::function<void(const std::string&, int64_t steps)> restore_state;
  /// A few words for the progress line (e.g. how many steps RandBET perturbed); from host-side
  /// counters only, so calling it never waits for the device.
  std::function<std::string()> describe;
};

struct TrainResult {
  int64_t epochs_done = 0;
  int64_t steps = 0;            ///< steps of the whole run, those of a resumed checkpoint included
  int64_t steps_run = 0;        ///< steps run in this call (0: a resume found nothing left to train)
  double final_loss = 0;        ///< mean training loss of the last epoch (NaN: unknown, see below)
  /// Training error of the last epoch (on augmented batches). When a resume finds nothing left to
  /// train, both come from the checkpoint; NaN for a checkpoint written before they were stored.
  double final_train_error = 0;
  double seconds = 0;           ///< wall time of the epochs run in this call
  double images_per_second = 0;
  /// Throughput after the first 10 steps of this call (excludes one-time warm-up: allocator,
  /// oneDNN primitive creation); equals images_per_second when there were fewer steps.
  double steady_images_per_second = 0;
};

/// Trains `net` in place on `train_set`. Throws bitrobust::Error if the loss becomes NaN (naming
/// the epoch and step), leaving no NaN model behind.
TrainResult train(models::Classifier& net, const data::Dataset& train_set, const TrainOptions& options,
                  const StepHooks& hooks = {});

/// Learning rate at `step` of `total_steps`: base × 0.1 per milestone passed (2/5, 3/5, 4/5).
double multistep_lr(double base, int64_t step, int64_t total_steps);

}  // namespace bitrobust::train
