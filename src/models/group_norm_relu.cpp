// Device-neutral entry of the fused GroupNorm + ReLU: validate, allocate, dispatch to the CPU
// kernel or its CUDA twin (src/kernels/{cpu,cuda}/group_norm_relu_*).
#include "bitrobust/models/group_norm_relu.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "bitrobust/common/error.h"
#include "bitrobust/config.h"
#include "bitrobust/models/group_norm_relu_kernels.h"
#include "bitrobust/models/models.h"

#ifdef BITROBUST_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace bitrobust::models {
namespace {

constexpr const char* kOp = "group_norm_relu";

// The affine parameters and input bias are float32 for the kernels; a bf16 network's (float32 or
// bf16) are widened, exactly.
at::Tensor float_parameter(const at::Tensor& p, const char* name, const at::Tensor& x) {
  BR_CHECK(p.defined(), kOp, ": ", name, " is an undefined tensor");
  BR_CHECK(p.scalar_type() == at::kFloat || (x.scalar_type() == at::kBFloat16 && p.scalar_type() == at::kBFloat16),
           kOp, ": ", name, " has dtype ", p.scalar_type(), "; expected float32",
           x.scalar_type() == at::kBFloat16 ? " or bfloat16" : "");
  BR_CHECK(p.dim() == 1 && p.size(0) == x.size(1), kOp, ": ", name, " must have shape [", x.size(1),
           "] (one value per channel of x), got ", p.sizes());
  BR_CHECK(p.device() == x.device(), kOp, ": ", name, " is on ", p.device(), " but x is on ",
           x.device());
  return p.to(at::kFloat).contiguous();
}

}  // namespace

at::Tensor group_norm_relu(const at::Tensor& x, int64_t groups, const at::Tensor& scale,
                           const at::Tensor& bias, double eps, const at::Tensor& input_bias, bool pool2x2) {
  BR_CHECK(x.defined(), kOp, ": x is an undefined tensor");
  BR_CHECK(x.is_cpu() || x.is_cuda(), kOp, ": x is on ", x.device(),
           "; only CPU and CUDA tensors are supported");
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  BR_CHECK(x.scalar_type() == at::kFloat || (bf16 && x.is_cpu()), kOp, ": x has dtype ", x.scalar_type(),
           " on ", x.device(), "; expected float32 (or bfloat16 on the CPU)");
  BR_CHECK(x.dim() >= 2, kOp, ": x must have shape [N, C, *] (at least 2 dims), got ", x.sizes());
  const at::Tensor scale_c = float_parameter(scale, "scale", x);
  const at::Tensor bias_c = float_parameter(bias, "bias", x);
  const at::Tensor input_bias_c =
      input_bias.defined() ? float_parameter(input_bias, "input_bias", x) : at::Tensor();
  BR_CHECK(!(at::GradMode::is_enabled() &&
             (x.requires_grad() || scale.requires_grad() || bias.requires_grad() ||
              (input_bias.defined() && input_bias.requires_grad()))),
           kOp, ": inference only, records no gradient; an input requires grad while grad mode is "
           "on (use at::relu(at::group_norm(...)) for training)");

  BR_CHECK(!pool2x2 || (x.dim() == 4 && x.size(2) >= 2 && x.size(3) >= 2), kOp,
           ": 2x2 pooling needs x of shape [N, C, H, W] with H, W >= 2, got ", x.sizes());

  kernels::GroupNormShape shape;
  shape.batch = x.size(0);
  shape.channels = x.size(1);
  shape.spatial = 1;
  for (int64_t d = 2; d < x.dim(); ++d) shape.spatial *= x.size(d);
  shape.groups = groups;
  // Channels-last input on the CPU is read as it lies, and the output keeps its layout (NOTE
  // [Channels-last GroupNorm]); anything else is made contiguous.
  shape.channels_last = x.is_cpu() && is_channels_last(x);
  kernels::check_group_norm_shape(kOp, shape, eps);
  const at::MemoryFormat layout = shape.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;

  const at::Tensor input = shape.channels_last ? x : x.contiguous();
  const float* input_bias_ptr = input_bias_c.defined() ? input_bias_c.data_ptr<float>() : nullptr;
  const float* scale_ptr = scale_c.data_ptr<float>();
  const float* bias_ptr = bias_c.data_ptr<float>();
  // (A bf16 tensor's elements are c10::BFloat16, the layout the kernels read as uint16_t.)
  const auto bf16_data = [](const at::Tensor& t) { return reinterpret_cast<uint16_t*>(t.data_ptr<at::BFloat16>()); };
  if (pool2x2 && x.is_cpu()) {
    at::Tensor y = at::empty({x.size(0), x.size(1), x.size(2) / 2, x.size(3) / 2}, input.options().memory_format(layout));
    if (y.numel() == 0) return y;
    if (bf16) {
      kernels::group_norm_relu_max_pool2x2_bf16_cpu(bf16_data(input), shape, x.size(2), x.size(3), scale_ptr,
                                                    bias_ptr, input_bias_ptr, eps, bf16_data(y));
    } else {
      kernels::group_norm_relu_max_pool2x2_cpu(input.data_ptr<float>(), shape, x.size(2), x.size(3), scale_ptr,
                                               bias_ptr, input_bias_ptr, eps, y.data_ptr<float>());
    }
    return y;
  }
  at::Tensor y = at::empty_like(input, layout);
  if (y.numel() == 0) return pool2x2 ? at::max_pool2d(y, {2, 2}) : y;  // (pooled: CUDA only here)
  if (x.is_cpu()) {
    if (bf16) {
      kernels::group_norm_relu_bf16_cpu(bf16_data(input), shape, scale_ptr, bias_ptr, input_bias_ptr, eps,
                                        bf16_data(y));
    } else {
      kernels::group_norm_relu_cpu(input.data_ptr<float>(), shape, scale_ptr, bias_ptr, input_bias_ptr, eps,
                                   y.data_ptr<float>());
    }
    return y;
  }
#ifdef BITROBUST_WITH_CUDA
  const c10::cuda::CUDAGuard guard(x.device());
  kernels::group_norm_relu_cuda(input.data_ptr<float>(), shape, scale_ptr, bias_ptr, input_bias_ptr, eps,
                                y.data_ptr<float>(),
                                at::cuda::getCurrentCUDAStream(x.device().index()).stream());
  return pool2x2 ? at::max_pool2d(y, {2, 2}) : y;
#else
  throw Error(detail::concat(kOp, ": x is on ", x.device(),
                             " but bitrobust was built without CUDA kernels"));
#endif
}

}  // namespace bitrobust::models
