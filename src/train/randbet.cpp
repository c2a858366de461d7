#include "bitrobust/train/randbet.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <nlohmann/json.hpp>

#include <cmath>

#include "bitrobust/common/error.h"
#include "bitrobust/common/philox.h"
#include "bitrobust/eval/bit_error_eval.h"

namespace bitrobust::train {

// NOTE [Training patterns]: RandBET draws a fresh pattern every step with the seed
// 2^63 | make_key(seed, "RANDBET", step) & (2^63 - 1). Evaluation seeds are small user-chosen
// integers (the reference uses 100..149), so training never sees an evaluation pattern.

namespace {
/// Makes `kept` a tensor of `like`'s shape, type and device, reusing it from an earlier step if it is one.
void keep_like(at::Tensor& kept, const at::Tensor& like) {
  if (!kept.defined() || !kept.sizes().equals(like.sizes()) || kept.device() != like.device() ||
      kept.scalar_type() != like.scalar_type()) {
    kept = at::empty_like(like);
  }
}
}  // namespace

void RandBETOptions::validate() const {
  BR_CHECK(std::isfinite(rate) && rate >= 0 && rate <= 1, "--randbet: bit error rate ", rate,
           " is outside [0, 1]");
  BR_CHECK(std::isfinite(start_loss) && start_loss > 0, "--randbet-start must be a loss > 0, got ", start_loss);
  BR_CHECK(mode == "average" || mode == "alternate", "--randbet-mode must be average or alternate, got '", mode, "'");
  BR_CHECK(curriculum == "once" || curriculum == "reference", "--randbet-curriculum must be once or reference, got '",
           curriculum, "'");
  BR_CHECK(gradient_clamp > 0, "RandBET gradient clamp must be > 0");
  bits::ErrorModel::parse(error_model, rate).validate();
}

RandomBitErrorTraining::RandomBitErrorTraining(models::Classifier& net, quant::QuantAwareTraining& qat,
                                               const RandBETOptions& options)
    : net_(net), qat_(qat), options_(options) {
  options_.validate();
  error_model_ = bits::ErrorModel::parse(options_.error_model, options_.rate);
  // Checked now rather than when the curriculum first injects errors, maybe hours into training.
  error_model_.kernel_params(qat_.scheme().bits);
  all_params_ = net_.parameters();
}

uint64_t RandomBitErrorTraining::pattern_seed(int64_t step) const {
  return (uint64_t{1} << 63) | (make_key(options_.seed, 0x52414E44424554ull, static_cast<uint64_t>(step)) >> 1);
}

std::string RandomBitErrorTraining::progress_text() const {
  return "bit errors in " + std::to_string(perturbed_steps_) + " of " + std::to_string(step_) + " steps";
}

std::string RandomBitErrorTraining::state() const {
  return nlohmann::json{{"step", step_},
                        {"active", active_},
                        {"active_steps", active_steps_},
                        {"perturbed_steps", perturbed_steps_}}
      .dump();
}

void RandomBitErrorTraining::restore_state(const std::string& json, int64_t expected_step) {
  const nlohmann::json j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  auto count = [&](const char* key) {
    BR_CHECK(j.is_object() && j.contains(key) && j[key].is_number_integer() && j[key].get<int64_t>() >= 0,
             "RandBET state '", json, "': '", key, "' must be a count >= 0");
    return j[key].get<int64_t>();
  };
  const int64_t step = count("step"), active_steps = count("active_steps"), perturbed_steps = count("perturbed_steps");
  BR_CHECK(j.contains("active") && j["active"].is_boolean(), "RandBET state '", json, "': 'active' must be true or false");
  const bool active = j["active"].get<bool>();
  // Once on, the "once" curriculum stays on; the reference's may have been on and be off now.
  const bool stays_on = options_.curriculum == "once";
  BR_CHECK(active_steps <= step && perturbed_steps <= active_steps && (active || active_steps == 0 || !stays_on),
           "RandBET state '", json, "' is inconsistent");
  BR_CHECK(expected_step < 0 || step == expected_step, "RandBET state '", json, "' is for step ", step,
           ", not for the ", expected_step, " steps the checkpoint has done");
  step_ = step;
  active_ = active;
  active_steps_ = active_steps;
  perturbed_steps_ = perturbed_steps;
}

// NOTE [RandBET curricula]: errors are injected only once the network has learned something.
// "once" starts them at the first step whose clean loss is below the threshold T and keeps them
// on. "reference" is the reference code's average_simple_curriculum: it starts with no errors and,
// after every step, decides for the next one: errors if the clean loss was below 1.15 T and the mean
// of the clean and perturbed losses was not above T, where a step without errors counts a perturbed
// loss of 0 (so from a step without errors, the next has them iff its clean loss is below 1.15 T).
// So it turns errors on earlier (T = 1.75: below a clean loss of 2.0125, near chance on 10 classes)
// and off again while they hurt too much.
void RandomBitErrorTraining::after_backward(const at::Tensor& loss, const at::Tensor& x, const at::Tensor& y) {
  const int64_t step = step_++;
  const bool reference = options_.curriculum == "reference";
  const double threshold = options_.start_loss;
  double clean_loss = 0;
  if (reference) {
    clean_loss = loss.item<double>();
  } else if (!active_) {
    if (loss.item<double>() >= threshold) return;
    active_ = true;
  }
  double perturbed_loss = 0;
  if (active_) {
    const bool alternate = options_.mode == "alternate";
    const bool perturbed_step = !alternate || (active_steps_ % 2 == 1);
    ++active_steps_;
    if (perturbed_step) {
      ++perturbed_steps_;
      const at::Tensor l = perturbed_pass(step, x, y);
      // A NaN perturbed loss passes the gradient clamp (NaN compares false) into the update, so it
      // stops the run here, where the step is known; on a GPU only where the curriculum reads it anyway.
      if (reference || l.is_cpu()) {
        perturbed_loss = l.item<double>();
        if (!std::isfinite(perturbed_loss)) {
          throw Diverged("the loss on the weights with bit errors is " + nonfinite_text(perturbed_loss));
        }
      }
    }
  }
  // Written as the reference writes it ("errors unless the mean is above T"): a NaN mean keeps them on.
  if (reference) active_ = clean_loss < 1.15 * threshold && !((clean_loss + perturbed_loss) / 2 > threshold);
}

at::Tensor RandomBitErrorTraining::perturbed_pass(int64_t step, const at::Tensor& x, const at::Tensor& y) {
  const bool alternate = options_.mode == "alternate";
  torch::NoGradGuard no_grad;
  // Codes of the current float weights, with the ranges the clean quantized pass of this step
  // computed from them; the whole model in one call per operation, into buffers kept across steps.
  const auto& names = qat_.names();
  const auto& params = qat_.params();
  const auto& masters = qat_.master_weights();
  const quant::QuantScheme& scheme = qat_.scheme();
  BR_CHECK(masters.size() == params.size() && qat_.ranges().defined(),
           "RandBET: the clean quantized pass (use_quantized_weights) must run before after_backward");
  quant::quantize_many_into(masters, qat_.ranges(), scheme, codes_);
  perturbed_.resize(codes_.size());
  quant::QuantizedModel current;
  current.names = names;
  current.params = params;
  std::vector<bits::CodeTensor> codes(codes_.size());
  int64_t row = 0;
  for (size_t i = 0; i < codes_.size(); ++i) {
    quant::QuantizedTensor t;
    t.codes = codes_[i];
    t.channels = quant::range_channels(masters[i], scheme);
    t.ranges = qat_.ranges().slice(0, row, row + t.channels);
    t.format = scheme.format();
    t.scheme = scheme;
    row += t.channels;
    keep_like(perturbed_[i], codes_[i]);
    codes[i] = {names[i], codes_[i], perturbed_[i], scheme.bits, static_cast<int64_t>(i)};
    current.tensors.push_back(std::move(t));
  }
  bits::inject_bit_errors_async(codes, error_model_, pattern_seed(step));
  current.load_weights(eval::with_perturbed_codes(current, codes));
  // The clean gradients are kept by handle and the perturbed backward pass gets fresh gradient
  // tensors: no copy and no zeroing per parameter.
  clean_grads_.assign(all_params_.size(), at::Tensor());
  for (size_t i = 0; i < all_params_.size(); ++i) {
    at::Tensor& g = all_params_[i].mutable_grad();
    clean_grads_[i] = g;
    g = at::Tensor();
  }
  // NOTE [Perturbed pass and running statistics]: the reference runs the perturbed pass on a copy
  // of the model, whose BatchNorm running statistics are thrown away. Here the same network runs
  // twice in training mode, so its buffers are put back as the clean pass left them: the perturbed
  // pass normalizes with its own batch statistics but must not move the running ones that
  // evaluation uses.
  const std::vector<at::Tensor> buffers = net_.buffers();
  saved_buffers_.resize(buffers.size());
  for (size_t i = 0; i < buffers.size(); ++i) {
    keep_like(saved_buffers_[i], buffers[i]);
    saved_buffers_[i].copy_(buffers[i]);
  }
  at::Tensor perturbed_loss;
  {
    at::AutoGradMode enable_grad(true);
    perturbed_loss = at::cross_entropy_loss(net_.forward(x), y);
    perturbed_loss.backward();
  }
  for (size_t i = 0; i < buffers.size(); ++i) buffers[i].copy_(saved_buffers_[i]);
  // grad = clamp(perturbed grad) (alternate), or its mean with the clean one, in one call for all;
  // -0 is read as +0, as the gradient accumulated into a zeroed tensor was before.
  std::vector<at::Tensor> grads, cleans;
  for (size_t i = 0; i < all_params_.size(); ++i) {
    at::Tensor& g = all_params_[i].mutable_grad();
    const at::Tensor& clean = clean_grads_[i];
    if (!g.defined()) {  // a parameter the perturbed pass did not reach: its gradient is zero
      if (!clean.defined()) continue;
      g = at::zeros_like(clean);
    }
    grads.push_back(g);
    cleans.push_back(clean.defined() ? clean : at::zeros_like(g));
  }
  quant::copy_clamped_many_(grads, grads, static_cast<float>(options_.gradient_clamp), alternate ? nullptr : &cleans,
                            /*positive_zero=*/true);
  return perturbed_loss.detach();
}

StepHooks robust_training_hooks(quant::QuantAwareTraining& qat, RandomBitErrorTraining* randbet) {
  StepHooks hooks;
  hooks.before_forward = [&qat]() { qat.use_quantized_weights(); };
  hooks.before_step = [&qat]() { qat.restore_float_weights(); };
  hooks.after_step = [&qat]() { qat.clip_weights(); };
  if (randbet) {
    hooks.after_backward = [randbet](const at::Tensor& loss, const at::Tensor& x, const at::Tensor& y) {
      randbet->after_backward(loss, x, y);
    };
    hooks.save_state = [randbet]() { return randbet->state(); };
    hooks.restore_state = [randbet](const std::string& json, int64_t steps) { randbet->restore_state(json, steps); };
    hooks.describe = [randbet]() { return randbet->progress_text(); };
  }
  return hooks;
}

}  // namespace bitrobust::train
