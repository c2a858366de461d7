#pragma once
// Random bit error training (RandBET): besides the clean quantized forward/backward pass, each
// step runs one with a fresh random bit error pattern injected into the quantized weights; the
// perturbed gradient is clamped elementwise and averaged with the clean one.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bitrobust/bits/bit_errors.h"
#include "bitrobust/models/models.h"
#include "bitrobust/quant/model_quantization.h"
#include "bitrobust/train/trainer.h"

namespace bitrobust::train {

struct RandBETOptions {
  double rate = 0.01;                  ///< bit error rate of the training patterns, in [0, 1]
  double start_loss = 1.75;            ///< the curriculum's threshold T on the clean loss
  /// once: errors from the first step whose clean loss is below T, for good. reference: the
  /// reference code's average_simple_curriculum, decided anew after every step; see
  /// NOTE [RandBET curricula].
  std::string curriculum = "once";
  std::string mode = "average";        ///< average | alternate (a clean step, then a perturbed step)
  std::string error_model = "random";  ///< as in `bitrobust eval`
  double gradient_clamp = 0.05;        ///< perturbed gradients are clamped to ±this
  uint64_t seed = 1;                   ///< training seed; see NOTE [Training patterns]
  void validate() const;
};

class RandomBitErrorTraining {
 public:
  /// `qat` provides the float master weights and the scheme; errors hit its quantized parameters.
  RandomBitErrorTraining(models::Classifier& net, quant::QuantAwareTraining& qat, const RandBETOptions& options);

  /// The StepHooks::after_backward of a RandBET run: the network holds the quantized weights and the
  /// clean gradients. Leaves the perturbed weights in place (QAT restores the float ones next).
  void after_backward(const at::Tensor& loss, const at::Tensor& x, const at::Tensor& y);

  /// What a resumed run must continue from (the step count that seeds the patterns, the curriculum
  /// and the alternate mode's phase), as JSON text; restore_state(state()) continues exactly.
  std::string state() const;
  /// Throws bitrobust::Error, naming what is wrong, if `json` is not such a state, or (when
  /// expected_step >= 0) not the state after expected_step steps.
  void restore_state(const std::string& json, int64_t expected_step = -1);

  /// once: whether errors have started; reference: whether the next step injects errors.
  bool active() const { return active_; }
  int64_t perturbed_steps() const { return perturbed_steps_; }
  /// "bit errors in P of S steps": the perturbed and all steps so far (for progress lines).
  std::string progress_text() const;
  /// The pattern seed of training step `step`: never one of the small evaluation seeds.
  uint64_t pattern_seed(int64_t step) const;

 private:
  /// Injects the step's pattern and runs the perturbed forward/backward pass, leaving the combined
  /// gradient; returns the perturbed loss.
  at::Tensor perturbed_pass(int64_t step, const at::Tensor& x, const at::Tensor& y);

  models::Classifier& net_;
  quant::QuantAwareTraining& qat_;
  RandBETOptions options_;
  bits::ErrorModel error_model_;
  std::vector<at::Tensor> all_params_;
  std::vector<at::Tensor> clean_grads_;  ///< the clean pass's gradient tensors of the current step
  std::vector<at::Tensor> codes_;        ///< the step's clean codes, kept from step to step
  std::vector<at::Tensor> perturbed_;    ///< the step's perturbed codes, kept from step to step
  std::vector<at::Tensor> saved_buffers_;  ///< running statistics before the perturbed pass
  bool active_ = false;
  int64_t step_ = 0;
  int64_t active_steps_ = 0;
  int64_t perturbed_steps_ = 0;
};

/// The step hooks of quantization-aware training (quantized forward and backward, step on the float
/// master weights, then clipping), plus RandBET's perturbed pass when `randbet` is given. Both
/// objects must outlive the hooks.
StepHooks robust_training_hooks(quant::QuantAwareTraining& qat, RandomBitErrorTraining* randbet = nullptr);

}  // namespace bitrobust::train
