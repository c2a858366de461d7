#pragma once
// 2x2 max pooling with stride 2, the networks' pooling: at::max_pool2d(x, {2, 2}) bit for bit, with
// our own kernel where ATen's is slow (NOTE [2x2 max pooling] in bitrobust/models/max_pool_kernels.h).
#include <ATen/core/Tensor.h>

namespace bitrobust::models {

/// The value of at::max_pool2d(x, {2, 2}), bit for bit (bf16: NaN for NaN, see below). Runs our CPU kernels where
/// max_pool2x2_uses_own_kernels(x). When a gradient is recorded (grad mode on and x requiring one)
/// it records its own, whose input gradient is ATen's bit for bit (and, in a backward pass with
/// create_graph, can be differentiated again as ATen's can). Otherwise, including CUDA tensors, it
/// calls at::max_pool2d, which then records the gradient and reports invalid input.
at::Tensor max_pool2x2(const at::Tensor& x);

/// Whether max_pool2x2 runs our kernels for x: a float32 CPU tensor of shape [N, C, H, W] or
/// [C, H, W], strided and contiguous, with H, W >= 2 and elements, while fused_inference_enabled()
/// (bitrobust/models/models.h); or such a bfloat16 tensor, or a channels-last [N, C, H, W] one
/// (is_channels_last, the output channels-last too), when no gradient is recorded for it (a
/// network run in bf16, `eval --precision bf16`, or channels-last, models.h). For bf16 the
/// output equals ATen's bit for bit except for NaN's sign and payload (ATen's goes through float and
/// back; ours keeps the element).
bool max_pool2x2_uses_own_kernels(const at::Tensor& x);

}  // namespace bitrobust::models
