#include "bitrobust/eval/weight_injector.h"

#include <ATen/ATen.h>

#include "bitrobust/common/error.h"
#include "bitrobust/eval/bit_error_eval.h"

namespace bitrobust::eval {

namespace {

// Whether parameter i can be written in place by the CPU kernel, from the storage it has now.
bool writable_in_place(const at::Tensor& codes, const at::Tensor& p) {
  return codes.is_cpu() && p.is_cpu() && p.scalar_type() == at::kFloat && p.is_contiguous();
}

}  // namespace

WeightInjector::WeightInjector(const quant::QuantizedModel& q)
    : q_(q), codes_(perturbable_codes(q)), perturbed_(with_perturbed_codes(q, codes_)) {
  q_.load_clean_weights();  // checks every tensor's codes, ranges and parameter
  incremental_ = true;
  for (size_t i = 0; i < codes_.size(); ++i) {
    const at::Tensor& p = q_.params[i];
    incremental_ = incremental_ && writable_in_place(codes_[i].clean, p);
    param_data_.push_back(p.data_ptr());
    codes_[i].out.copy_(codes_[i].clean);
    ranges_.push_back(q_.tensors[i].ranges.contiguous());
  }
}

int64_t WeightInjector::inject(const bits::ErrorModel& model, uint64_t seed, const bits::ParamSelector& selector) {
  for (size_t i = 0; incremental_ && i < codes_.size(); ++i) {
    const at::Tensor& p = q_.params[i];
    // Moved, cast or replaced since construction: the state no longer describes these weights, and
    // the dense path rewrites them all (or names what does not fit).
    if (!writable_in_place(codes_[i].clean, p) || p.data_ptr() != param_data_[i]) {
      incremental_ = false;
      state_.clear();
    }
  }
  if (!incremental_) {
    const int64_t changed = bits::inject_bit_errors(codes_, model, seed, selector);
    q_.load_weights(perturbed_);
    return changed;
  }
  const std::vector<bits::InjectTask> injects = bits::inject_tasks(codes_, model, selector);
  std::vector<bits::IncrementalInjectTask> tasks(injects.size());
  for (size_t i = 0; i < injects.size(); ++i) {
    const quant::QuantizedTensor& t = q_.tensors[i];
    tasks[i].inject = injects[i];
    tasks[i].weights = q_.params[i].data_ptr<float>();
    tasks[i].channels = t.channels;
    tasks[i].ranges = reinterpret_cast<const kernels::QuantRange*>(ranges_[i].data_ptr<float>());
    tasks[i].format = t.format;
  }
  return bits::inject_dequantize_incremental_cpu(tasks.data(), static_cast<int64_t>(tasks.size()), seed, state_);
}

void WeightInjector::load_clean() {
  for (bits::CodeTensor& c : codes_) c.out.copy_(c.clean);
  state_.clear();
  q_.load_clean_weights();
}

}  // namespace bitrobust::eval
