#include "bitrobust/eval/weight_injector.h"

#include <ATen/ATen.h>

#include <cstdlib>
#include <string>

#include "bitrobust/common/error.h"
#include "bitrobust/eval/bit_error_eval.h"
#include "bits/device_dispatch.h"

namespace bitrobust::eval {

namespace {

// How parameter p can be written from the storage it has now, given its codes.
WeightInjector::Path path_for(const at::Tensor& codes, const at::Tensor& p) {
  if (p.scalar_type() != at::kFloat || !p.is_contiguous() || p.device() != codes.device()) {
    return WeightInjector::Path::Dense;
  }
  if (codes.is_cpu()) return WeightInjector::Path::Incremental;
  return codes.is_cuda() ? WeightInjector::Path::Fused : WeightInjector::Path::Dense;
}

}  // namespace

WeightInjector::WeightInjector(const quant::QuantizedModel& q)
    : q_(q), codes_(perturbable_codes(q)), perturbed_(with_perturbed_codes(q, codes_)) {
  q_.load_clean_weights();  // checks every tensor's codes, ranges and parameter
  for (size_t i = 0; i < codes_.size(); ++i) {
    const at::Tensor& p = q_.params[i];
    const Path path = path_for(codes_[i].clean, p);
    if (i == 0) path_ = path;
    if (path != path_) path_ = Path::Dense;
    param_data_.push_back(p.data_ptr());
    codes_[i].out.copy_(codes_[i].clean);
    ranges_.push_back(q_.tensors[i].ranges.contiguous());
  }
  // BITROBUST_INJECTION=dense takes the dense path whatever the tensors: the same weights, bit for
  // bit, through separate injection and dequantization kernels (for a GPU on which the fused kernel
  // is in doubt, and to compare the paths' speed).
  if (const char* forced = std::getenv("BITROBUST_INJECTION"); forced != nullptr && *forced != '\0') {
    BR_CHECK(std::string(forced) == "dense", "BITROBUST_INJECTION must be 'dense' (or unset), got '", forced, "'");
    path_ = Path::Dense;
  }
}

int64_t WeightInjector::inject(const bits::ErrorModel& model, uint64_t seed, const bits::ParamSelector& selector) {
  for (size_t i = 0; path_ != Path::Dense && i < codes_.size(); ++i) {
    const at::Tensor& p = q_.params[i];
    // Moved, cast or replaced since construction: the state no longer describes these weights (and
    // the kernels' pointers would be stale), and the dense path rewrites them all (or names what
    // does not fit).
    if (path_for(codes_[i].clean, p) != path_ || p.data_ptr() != param_data_[i]) {
      path_ = Path::Dense;
      state_.clear();
    }
  }
  if (path_ == Path::Dense) {
    const int64_t changed = bits::inject_bit_errors(codes_, model, seed, selector);
    q_.load_weights(perturbed_);
    return changed;
  }
  const std::vector<bits::InjectTask> injects = bits::inject_tasks(codes_, model, selector);
  std::vector<bits::InjectDequantizeTask> tasks(injects.size());
  for (size_t i = 0; i < injects.size(); ++i) {
    const quant::QuantizedTensor& t = q_.tensors[i];
    tasks[i].inject = injects[i];
    tasks[i].weights = q_.params[i].data_ptr<float>();
    tasks[i].channels = t.channels;
    tasks[i].ranges = reinterpret_cast<const kernels::QuantRange*>(ranges_[i].data_ptr<float>());
    tasks[i].format = t.format;
  }
  if (path_ == Path::Incremental) {
    return bits::inject_dequantize_incremental_cpu(tasks.data(), static_cast<int64_t>(tasks.size()), seed, state_);
  }
  if (tasks.empty()) return 0;
  const at::Tensor& any = codes_.front().clean;
  const at::Tensor changed = at::zeros({1}, any.options().dtype(at::kLong));
  bits::detail::on_cuda("WeightInjector::inject", any, [&](void* stream) {
    bits::inject_dequantize_cuda(tasks.data(), static_cast<int64_t>(tasks.size()), seed,
                                 reinterpret_cast<unsigned long long*>(changed.data_ptr<int64_t>()), stream);
  });
  return changed.item<int64_t>();
}

void WeightInjector::load_clean() {
  for (bits::CodeTensor& c : codes_) c.out.copy_(c.clean);
  state_.clear();
  q_.load_clean_weights();
}

}  // namespace bitrobust::eval
