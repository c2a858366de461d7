#pragma once
// 2x2 max pooling with stride 2, the networks' pooling: at::max_pool2d(x, {2, 2}) bit for bit, with
// our own kernel where ATen's is slow (NOTE [2x2 max pooling] in bitrobust/models/max_pool_kernels.h).
#include <ATen/core/Tensor.h>

namespace bitrobust::models {

/// The value of at::max_pool2d(x, {2, 2}), bit for bit. Runs our CPU kernel for inference: x a
/// float32 CPU tensor of shape [N, C, H, W] or [C, H, W], contiguous (not channels-last), with
/// H, W >= 2, and no gradient to record (grad mode off, or x not requiring one), while
/// fused_inference_enabled() (bitrobust/models/models.h). Otherwise, including CUDA tensors
/// (cuDNN's pooling) and training, it calls at::max_pool2d, which then records the gradient and
/// reports invalid input.
at::Tensor max_pool2x2(const at::Tensor& x);

}  // namespace bitrobust::models
