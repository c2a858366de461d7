#pragma once
// Fused GroupNorm + ReLU for inference, over raw pointers: plain C++ (no Torch), shared by the CPU
// kernel (src/kernels/cpu/group_norm_relu_cpu.cpp) and its CUDA twin
// (src/kernels/cuda/group_norm_relu_cuda.cu). The torch-facing op is
// bitrobust/models/group_norm_relu.h.
//
// NOTE [Fused GroupNorm + ReLU]: for x of shape [N, C, S] (contiguous, row-major; S = H*W for
// images, S = 1 for the [N, C] activations of linear layers) and G groups of C/G consecutive
// channels,
//   y[n, c, s] = max(0, (x[n, c, s] - mean[n, g]) * rstd[n, g] * scale[c] + bias[c]),  g = c / (C/G),
//   rstd[n, g] = 1 / sqrt(var[n, g] + eps),
// where mean and the biased variance (divided by the count, as at::group_norm) run over the
// D = C/G * S elements of group (n, g). Because channels of a group are consecutive, group (n, g)
// is the contiguous block x[(n*G + g) * D, (n*G + g + 1) * D).
//
// Numerics: eager at::group_norm evaluates x * (rstd*scale) + (bias - mean*rstd*scale); when the
// mean is large against the spread (x = 1000 + noise) that adds two large numbers and loses the
// result. Here the statistics are two-pass (mean first, then squared deviations from it, with the
// corrected two-pass term), and every output is formed from the deviation x - mean, with the mean
// carried as a float pair hi + lo: x - hi is exact near the mean (Sterbenz), so the deviation is
// rounded once. The CPU accumulates in double; the CUDA twin accumulates in float (per-thread
// partial sums, then a tree) around a shift taken from the data, refined by the second pass.
// The two agree to rounding, not bit for bit (the reduction orders differ).
//
// ReLU keeps NaN: a group holding a NaN or an infinity gives NaN outputs, as at::group_norm
// followed by at::relu does, so a bit error sweep still sees a broken activation.
//
// NOTE [Channels-last GroupNorm]: with shape.channels_last the CPU kernels read x as [N, S, C]
// (pixel after pixel, a pixel's C values side by side) and write y the same way (pooled: [N, H/2,
// W/2, C]), so that a network can run channels-last throughout: oneDNN's convolutions on this
// machine's CPU took 0.71-0.80x their NCHW time on SimpleNet's layers in float32 (0.53x at width
// 16), where NCHW input and output are reordered (docs/measurements.md, "Channels-last inference on
// the CPU"). A group is then S runs of C/G values, C apart, so the statistics are kept per channel, with
// the channels in vector lanes, and added up per group: the same sums in another order, so the
// statistics agree with the channels-first kernel's to double rounding, and the outputs (formed by
// the same float operations from the float mean and rstd) are its outputs, except where the float
// mean pair or rstd lands on the other side of a rounding boundary (1 ulp of the statistic).
// OpenMP runs over the N samples instead of the N*G groups (a sample's statistics are computed
// together), so a batch of one runs on one thread.
#include <cmath>
#include <cstdint>

#include "bitrobust/common/error.h"

namespace bitrobust::kernels {

/// Sizes of one fused GroupNorm + ReLU call on x of shape [batch, channels, spatial].
struct GroupNormShape {
  int64_t batch = 0;     ///< N >= 0
  int64_t channels = 0;  ///< C >= 1
  int64_t spatial = 1;   ///< S = H*W (1 for [N, C] input), >= 0
  int64_t groups = 1;    ///< G >= 1, C % G == 0
  /// x and y hold [batch, spatial, channels] instead: the memory of a channels-last
  /// [N, C, H, W] tensor (NOTE [Channels-last GroupNorm]). CPU kernels only.
  bool channels_last = false;

  int64_t group_size() const { return channels / groups * spatial; }  ///< D, elements per group
  int64_t numel() const { return batch * channels * spatial; }
};

/// Throws bitrobust::Error (message starting with `what`) unless the sizes are valid (see
/// GroupNormShape) and eps is finite and >= 0. Inline: both kernel libraries call it.
inline void check_group_norm_shape(const char* what, const GroupNormShape& shape, double eps) {
  BR_CHECK(shape.batch >= 0 && shape.spatial >= 0, what, ": sizes must be >= 0, got batch ",
           shape.batch, ", spatial ", shape.spatial);
  BR_CHECK(shape.channels >= 1, what, ": channels must be >= 1, got ", shape.channels);
  BR_CHECK(shape.groups >= 1 && shape.channels % shape.groups == 0, what, ": ", shape.channels,
           " channels do not split into ", shape.groups, " groups of equal size");
  BR_CHECK(std::isfinite(eps) && eps >= 0.0, what, ": eps must be finite and >= 0, got ", eps);
}

/// y = relu(group_norm(x + input_bias)) on the CPU, see NOTE [Fused GroupNorm + ReLU].
/// x and y: shape.numel() contiguous floats each (y must not overlap x); scale and bias:
/// shape.channels floats each (the affine parameters, scale = weight, or 1 + weight for the
/// re-parameterized norm); input_bias: nullptr, or shape.channels floats added to x per channel
/// before normalizing (the bias of the convolution before, which then skips its own pass: the
/// same float additions, so the same result). eps is added to the variance. OpenMP over the N*G
/// groups (channels last: the N samples); each is computed by one thread in a fixed order, so results do not depend on the
/// number of threads. Throws bitrobust::Error for invalid sizes; an empty tensor does nothing.
void group_norm_relu_cpu(const float* x, const GroupNormShape& shape, const float* scale,
                         const float* bias, const float* input_bias, double eps, float* y);

/// group_norm_relu_cpu followed by 2x2 max pooling (NOTE [2x2 max pooling] in
/// bitrobust/models/max_pool_kernels.h), in one pass: y is max_pool2x2_cpu of group_norm_relu_cpu's
/// output, bit for bit, for x of shape [batch, channels, height, width] (shape.spatial must be
/// height * width, and height, width >= 2); y: batch * channels * (height / 2) * (width / 2) floats.
/// Each channel is normalized into a buffer of the thread's own, still in cache when it is pooled
/// (channels last: each 2x2 window's four pixels are normalized and pooled in registers,
/// max_pool2x2_channels_last_cpu of the unpooled output), so the full-size output is never written
/// to memory nor read back. Throws bitrobust::Error for invalid sizes.
void group_norm_relu_max_pool2x2_cpu(const float* x, const GroupNormShape& shape, int64_t height, int64_t width,
                                     const float* scale, const float* bias, const float* input_bias, double eps,
                                     float* y);

/// The bf16 forms of group_norm_relu_cpu and group_norm_relu_max_pool2x2_cpu, for networks run in
/// bfloat16 (`eval --precision bf16`): x and y hold bf16 values (bitrobust/common/bfloat16.h),
/// scale, bias and input_bias stay float. Each group is widened to floats (exactly), computed as
/// the float kernels compute it, and each output narrowed once (round to nearest even): y is the
/// float kernel's output for the widened x, narrowed, bit for bit. Same sizes, threads and errors.
void group_norm_relu_bf16_cpu(const uint16_t* x, const GroupNormShape& shape, const float* scale,
                              const float* bias, const float* input_bias, double eps, uint16_t* y);
void group_norm_relu_max_pool2x2_bf16_cpu(const uint16_t* x, const GroupNormShape& shape, int64_t height,
                                          int64_t width, const float* scale, const float* bias,
                                          const float* input_bias, double eps, uint16_t* y);

/// The CUDA twin (defined only when the CUDA kernels are built): same arguments (channels first
/// only), all pointers are device memory; `stream` is a cudaStream_t, the launch is asynchronous on it (no host
/// synchronisation). Throws bitrobust::Error for invalid sizes or a failed launch.
void group_norm_relu_cuda(const float* x, const GroupNormShape& shape, const float* scale,
                          const float* bias, const float* input_bias, double eps, float* y,
                          void* stream);

}  // namespace bitrobust::kernels
