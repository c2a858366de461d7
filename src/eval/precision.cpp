#include "bitrobust/eval/precision.h"

#include <ATen/Context.h>

#include "bitrobust/common/error.h"

namespace bitrobust::eval {

Precision parse_precision(const std::string& text) {
  if (text == "fp32") return Precision::Fp32;
  if (text == "tf32") return Precision::Tf32;
  if (text == "bf16") return Precision::Bf16;
  throw Error("--precision: unknown precision '" + text + "' (expected fp32, tf32 or bf16)");
}

std::string precision_name(Precision p) {
  switch (p) {
    case Precision::Fp32: return "fp32";
    case Precision::Tf32: return "tf32";
    case Precision::Bf16: return "bf16";
  }
  return "?";
}

Precision default_precision(const at::Device& device) { return device.is_cuda() ? Precision::Tf32 : Precision::Fp32; }

InferencePrecision::InferencePrecision(Precision p, models::Classifier& net, const at::Device& device) {
  BR_CHECK(!(p == Precision::Tf32 && device.is_cpu()),
           "--precision tf32: TF32 is a CUDA tensor-core format; on the CPU use fp32 or bf16");
  auto& context = at::globalContext();
  saved_cudnn_tf32_ = context.allowTF32CuDNN();
  saved_cublas_tf32_ = context.allowTF32CuBLAS();
  context.setAllowTF32CuDNN(p == Precision::Tf32);
  context.setAllowTF32CuBLAS(p == Precision::Tf32);
  if (p == Precision::Bf16) net.to(at::kBFloat16);
}

InferencePrecision::~InferencePrecision() {
  auto& context = at::globalContext();
  context.setAllowTF32CuDNN(saved_cudnn_tf32_);
  context.setAllowTF32CuBLAS(saved_cublas_tf32_);
}

}  // namespace bitrobust::eval
