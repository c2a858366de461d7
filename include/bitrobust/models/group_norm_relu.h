#pragma once
// Fused GroupNorm + ReLU for inference: relu(group_norm(x)) in one pass on the CPU and in one
// kernel on CUDA. The formula and its numerics: NOTE [Fused GroupNorm + ReLU] in
// bitrobust/models/group_norm_relu_kernels.h. The networks use it when they run in eval mode
// without gradients (see set_fused_inference in bitrobust/models/models.h).
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace bitrobust::models {

/// y = max(0, group_norm(x, groups, scale, bias, eps)), the value of
/// at::relu(at::group_norm(x, groups, scale, bias, eps)) to about 1e-6 relative.
/// x: float32 of shape [N, C, *] (any strides; dims >= 2), on the CPU or a CUDA device; scale and
/// bias: float32 with C elements on x's device; C % groups == 0; eps >= 0. Returns a new contiguous
/// tensor of x's shape and dtype, or on the CPU for a channels-last x (is_channels_last in
/// bitrobust/models/models.h) a channels-last one, read and written as they lie (NOTE
/// [Channels-last GroupNorm]: the contiguous input's outputs, but for the rare 1-ulp difference
/// of a statistic summed in another order). On the CPU x may also be bfloat16 (scale, bias and input_bias
/// then float32 or bfloat16): computed in float from the widened values, each output rounded to
/// bf16 once, so it is the float op's output for x.to(float), rounded (the pooled one too). CUDA: runs on the current stream of x's device, without synchronising.
/// Inference only: no autograd graph is recorded, so it throws bitrobust::Error when gradient
/// mode is on and an input requires a gradient, and for every invalid argument.
/// input_bias (optional, C values like scale): the op computes relu(group_norm(x + input_bias))
/// instead, the bias added per channel as x is read. A convolution followed by GroupNorm + ReLU
/// then runs without its bias, which on CUDA saves the separate pass over the output that adds it
/// (the values are the same float sums, so the result is too).
/// pool2x2: return the 2x2 max pooling of the result instead (x of shape [N, C, H, W] with
/// H, W >= 2), the value of max_pool2x2 (bitrobust/models/max_pool.h) of the unpooled result, bit
/// for bit. On the CPU the two run in one pass (the unpooled result never reaches memory); on CUDA
/// the fused op is followed by ATen's pooling.
at::Tensor group_norm_relu(const at::Tensor& x, int64_t groups, const at::Tensor& scale,
                           const at::Tensor& bias, double eps, const at::Tensor& input_bias = {},
                           bool pool2x2 = false);

}  // namespace bitrobust::models
