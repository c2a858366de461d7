#pragma once
// Bit error patterns put into a quantized network's weights, one pattern after another: the inner
// step of the RErr sweep (NOTE [RErr protocol] in bit_error_eval.cpp).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "bitrobust/bits/bit_errors.h"
#include "bitrobust/quant/model_quantization.h"

namespace bitrobust::eval {

/// Owns the perturbed codes of a quantized model and keeps the network's parameters equal to their
/// dequantized values, by one of three paths (all give the same weights bit for bit). With every
/// parameter a contiguous float32 tensor on its codes' device, on the CPU it works incrementally
/// (NOTE [Incremental injection] in bitrobust/bits/bit_errors_kernels.h): a pattern costs its draw
/// and the elements it and the previous pattern changed, not a pass over the model; on CUDA each
/// pattern is one fused pass over the model (bits::inject_dequantize_cuda: copy, flip and
/// dequantize in one kernel launch per batch of tensors). Otherwise (a bf16 or double network), or
/// with the environment variable BITROBUST_INJECTION=dense, it injects into every code, then
/// dequantizes every weight.
///
/// Nothing else may write the network's quantized parameters while an injector is in use, except
/// through load_clean(). A parameter moved, cast or given new storage after construction (say by
/// net.to(device)) is noticed at the next inject(), which then takes the dense path; what is
/// compared is the storage's address, type and device, so storage replaced between two patterns
/// and given back at the same address with other values is not noticed.
class WeightInjector {
 public:
  /// Loads q's clean weights into the network. q must outlive the injector.
  explicit WeightInjector(const quant::QuantizedModel& q);
  // A copy would share the perturbed codes but not the record of what they hold.
  WeightInjector(const WeightInjector&) = delete;
  WeightInjector& operator=(const WeightInjector&) = delete;

  /// The network's quantized parameters become the clean model's with the pattern of (model, seed)
  /// in the parameters `selector` selects (the patterns of bits::inject_bit_errors). Returns the
  /// number of bits changed.
  int64_t inject(const bits::ErrorModel& model, uint64_t seed, const bits::ParamSelector& selector = {});

  /// Loads the clean weights again.
  void load_clean();

  /// The codes with the last pattern applied (clean before the first inject and after load_clean).
  const std::vector<bits::CodeTensor>& codes() const { return codes_; }

  /// How patterns are written into the weights (see the class comment).
  enum class Path { Incremental, Fused, Dense };
  Path path() const { return path_; }
  bool incremental() const { return path_ == Path::Incremental; }

 private:
  const quant::QuantizedModel& q_;
  std::vector<bits::CodeTensor> codes_;
  std::vector<quant::QuantizedTensor> perturbed_;  ///< q's formats and ranges over codes_[i].out
  Path path_ = Path::Incremental;
  std::vector<void*> param_data_;                  ///< the parameters' storage the kernels' tasks point to
  std::vector<at::Tensor> ranges_;                 ///< contiguous ranges, for the kernels' tasks
  bits::IncrementalInjectState state_;
};

}  // namespace bitrobust::eval
