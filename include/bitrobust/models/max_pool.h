#pragma once
// 2x2 max pooling with stride 2, the networks' pooling: at::max_pool2d(x, {2, 2}) bit for bit, with
// our own kernel where ATen's is slow (NOTE [2x2 max pooling] in bitrobust/models/max_pool_kernels.h).
#include <ATen/core/Tensor.h>

namespace bitrobust::models {

/// The value of at::max_pool2d(x, {2, 2}), bit for bit. Runs our CPU kernels when x is a float32
/// CPU tensor of shape [N, C, H, W] or [C, H, W], contiguous (not channels-last), with H, W >= 2,
/// while fused_inference_enabled() (bitrobust/models/models.h). When a gradient is recorded (grad
/// mode on and x requiring one) it records its own, which gives ATen's input gradient bit for bit
/// but cannot be differentiated again (a backward pass with create_graph throws bitrobust::Error).
/// Otherwise, including CUDA tensors (cuDNN's pooling), it calls at::max_pool2d, which then records
/// the gradient and reports invalid input.
at::Tensor max_pool2x2(const at::Tensor& x);

}  // namespace bitrobust::models
