#pragma once
// Inference precision of the bit error benchmark (`bitrobust eval --precision`).
//
// NOTE [Inference precision]
// fp32: IEEE float32 everywhere (TF32 off for cuDNN convolutions and cuBLAS matmuls).
// tf32: float32 tensors, but CUDA convolutions and matmuls may use TF32 tensor cores (10-bit
//       mantissa inputs, float32 accumulation). PyTorch's default for convolutions, so the default
//       on CUDA. The CPU has no TF32: asking for it there is an error, not a silent fp32 run.
// bf16: the network is converted to bfloat16 (weights and activations). Quantized weights are
//       dequantized in float32 and rounded to bf16 (QuantizedModel::load_weights); parameters that
//       are not quantized are rounded once. On the CPU, convolutions and linear layers run in
//       oneDNN's bf16 kernels (AVX512_BF16 here; AMX with a newer oneDNN), and each GroupNorm + ReLU
//       (+ 2x2 pooling) is computed in float from the bf16 values and rounded once (our kernels,
//       bitrobust/models/group_norm_relu.h). Whether a precision is safe for a model is measured,
//       not assumed: its RErr must stay inside the fp32 run's 95% confidence interval
//       (docs/measurements.md).
#include <ATen/core/Tensor.h>

#include <string>

#include "bitrobust/models/models.h"

namespace bitrobust::eval {

enum class Precision { Fp32, Tf32, Bf16 };

/// "fp32", "tf32" or "bf16"; throws bitrobust::Error naming the value otherwise.
Precision parse_precision(const std::string& text);
std::string precision_name(Precision p);
/// What PyTorch does for convolutions by default: tf32 on CUDA, fp32 on the CPU.
Precision default_precision(const at::Device& device);

/// Applies a precision to `net` on `device` for the object's lifetime: the TF32 switches are
/// restored on destruction; a bf16 conversion of the network stays (it is not reversible).
/// Throws bitrobust::Error for tf32 on the CPU.
class InferencePrecision {
 public:
  InferencePrecision(Precision p, models::Classifier& net, const at::Device& device);
  ~InferencePrecision();
  InferencePrecision(const InferencePrecision&) = delete;
  InferencePrecision& operator=(const InferencePrecision&) = delete;

 private:
  bool saved_cudnn_tf32_, saved_cublas_tf32_;
};

}  // namespace bitrobust::eval
