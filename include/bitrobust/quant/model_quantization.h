#pragma once
// Quantization of a whole network: which parameters, their clean codes and ranges, and
// quantization-aware training (float master weights, quantized forward; straight-through).
#include <ATen/core/Tensor.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bitrobust/models/models.h"
#include "bitrobust/quant/quantizer.h"
#include "bitrobust/quant/scheme.h"

namespace bitrobust::io {
struct ModelFile;
}

namespace bitrobust::quant {

/// The quantized parameters of a network, in the network's parameter order. Every trainable
/// parameter selected by the selector is quantized, each tensor with its own range; buffers
/// (BatchNorm running statistics) are not.
struct QuantizedModel {
  QuantScheme scheme;
  ParamSelector selector;
  std::vector<std::string> names;
  std::vector<at::Tensor> params;           ///< the network's own parameter tensors (shared storage)
  std::vector<QuantizedTensor> tensors;     ///< clean codes and ranges

  int64_t total_weights() const;
  int64_t total_bits() const;
  /// Description for model files and results: scheme string and per-parameter names, shapes, formats.
  nlohmann::json describe() const;
  /// Writes the dequantized clean codes into the network's parameters.
  void load_clean_weights() const;
  /// Writes dequantized `codes` (one per parameter, shaped and formatted as `tensors`) into the
  /// network's parameters. Parameters of another floating type (a bf16 network, see
  /// eval/precision.h) receive the float32 values rounded to their type, through one float32
  /// scratch tensor per parameter kept from call to call (no allocation per pattern).
  void load_weights(const std::vector<QuantizedTensor>& codes) const;

 private:
  mutable std::vector<at::Tensor> float_scratch_;
};

/// Quantizes the selected parameters of `net` (ranges from the current weights). Throws
/// bitrobust::Error for NaN/infinite weights (naming the parameter) or when nothing is selected.
QuantizedModel quantize_model(models::Classifier& net, const QuantScheme& scheme, const ParamSelector& selector = {});

/// Stores the quantized state in a model file (meta["quantization"], codes and ranges).
void store_in_model_file(const QuantizedModel& q, io::ModelFile& file);
/// Rebuilds the quantized state of a model file over its network (no re-quantization: the codes
/// stored are used as they are). Throws bitrobust::Error if the file is not quantized or does not fit.
QuantizedModel load_from_model_file(io::ModelFile& file);

/// Quantization-aware training with straight-through gradients: before each forward pass the
/// (clipped) float master weights are saved and replaced by their quantized values; after the
/// backward pass they are restored, so the optimizer applies the gradient of the quantized
/// network to the float weights. With scheme.clip > 0 the weights are also clipped to
/// [-clip, clip] after every step (weight clipping).
class QuantAwareTraining {
 public:
  QuantAwareTraining(models::Classifier& net, const QuantScheme& scheme, const ParamSelector& selector = {});
  void use_quantized_weights();   ///< save masters, write quantized weights
  void restore_float_weights();   ///< write masters back
  void clip_weights();            ///< projection onto [-clip, clip] (no-op without clip)
  const std::vector<std::string>& names() const { return names_; }
  const std::vector<at::Tensor>& params() const { return params_; }
  const QuantScheme& scheme() const { return scheme_; }
  /// The float master weights saved by use_quantized_weights() (empty before its first call).
  const std::vector<at::Tensor>& master_weights() const { return masters_; }
  /// The ranges of the master weights computed by the last use_quantized_weights(): float32
  /// [sum of the parameters' range channels, 2], parameter after parameter (fake_quantize_many_).
  const at::Tensor& ranges() const { return ranges_; }

 private:
  QuantScheme scheme_;
  std::vector<std::string> names_;
  std::vector<at::Tensor> params_;
  std::vector<at::Tensor> masters_;
  at::Tensor ranges_;  ///< every parameter's ranges of the last step, kept to avoid an allocation per step
};

/// Checks that every parameter of `net` is finite; throws naming the first one that is not.
void check_finite_parameters(models::Classifier& net, const std::string& what);

}  // namespace bitrobust::quant
