#pragma once
// 2x2 max pooling with stride 2 and its gradient, over raw pointers: plain C++ (no Torch). The CPU
// kernel is src/kernels/cpu/max_pool_cpu.cpp; the torch-facing op is bitrobust/models/max_pool.h.
//
// NOTE [2x2 max pooling]: for x of shape [P, H, W] (P = N*C planes, contiguous, row-major),
//   y[p, i, j] = max of x[p, 2i, 2j], x[p, 2i, 2j+1], x[p, 2i+1, 2j], x[p, 2i+1, 2j+1],
// for i < H/2 and j < W/2 (floor: an odd last row or column is dropped). The four are taken in
// that order, each replacing the maximum so far when it is greater or NaN: ATen's CPU max pooling
// does the same (`val > maxval || isnan(val)`), so the outputs are its bit for bit, including which
// of +0 and -0 wins a tie (the first) and NaN propagating (a bit error sweep must still see a broken
// activation).
//
// Why our own: ATen 1.13's CPU max_pool2d always computes the argmax indices too, one element at a
// time; on LeNet's shapes at batch 500 it took 6-13x this kernel's time, and a third of
// `bitrobust test`'s on LeNet (docs/measurements.md).
#include <cstdint>

namespace bitrobust::kernels {

/// y = 2x2 max pooling of x, NOTE [2x2 max pooling]. x: planes * height * width contiguous floats;
/// y: planes * (height / 2) * (width / 2) floats, not overlapping x. OpenMP over the planes (one
/// thread per plane, so the result does not depend on the number of threads). Throws
/// bitrobust::Error for negative sizes; nothing to do when an output dimension is 0.
void max_pool2x2_cpu(const float* x, int64_t planes, int64_t height, int64_t width, float* y);

/// max_pool2x2_cpu on bf16 values (bitrobust/common/bfloat16.h), compared as the floats they widen
/// to: each output is one of its window's elements, the one the float rule picks, bit for bit.
void max_pool2x2_bf16_cpu(const uint16_t* x, int64_t planes, int64_t height, int64_t width, uint16_t* y);

/// max_pool2x2_cpu for channels-last input: x holds [batch, height, width, channels] (a
/// channels-last [N, C, H, W] tensor's memory), y [batch, height / 2, width / 2, channels]; each
/// output is the one max_pool2x2_cpu gives for its channel's plane, bit for bit (the same four
/// elements in the same order). OpenMP over the output rows. Throws bitrobust::Error for negative
/// sizes; nothing to do when an output dimension is 0. The bf16 form as max_pool2x2_bf16_cpu.
void max_pool2x2_channels_last_cpu(const float* x, int64_t batch, int64_t channels, int64_t height, int64_t width,
                                   float* y);
void max_pool2x2_channels_last_bf16_cpu(const uint16_t* x, int64_t batch, int64_t channels, int64_t height,
                                        int64_t width, uint16_t* y);

/// The rule of NOTE [2x2 max pooling] for one element: `value` replaces the maximum so far when it
/// is greater or NaN. A window (a, b, c, d) pools to pool_take(pool_take(a, b), pool_take(c, d)).
inline float pool_take(float max_so_far, float value) {
  return (value > max_so_far || value != value) ? value : max_so_far;
}

/// One plane of max_pool2x2_cpu, for kernels that pool what they have just computed (the fused
/// GroupNorm + ReLU): y gets (height / 2) * (width / 2) floats; pairs is a buffer of the caller's of
/// 2 * (height / 2) * (width / 2) floats. Sizes as max_pool2x2_cpu's, unchecked.
void max_pool2x2_plane(const float* x, int64_t height, int64_t width, float* pairs, float* y);

/// For training: max_pool2x2_cpu, and where each maximum came from: positions[k] is the place in
/// its window of the element output k took (0, 1: the top row's left and right, 2, 3: the bottom
/// row's), the element ATen's argmax index names (the first of the greatest, or the last NaN).
/// positions: as many bytes as y has floats.
void max_pool2x2_with_positions_cpu(const float* x, int64_t planes, int64_t height, int64_t width, float* y,
                                    uint8_t* positions);

/// The gradient with respect to x of a loss whose gradient with respect to y is grad_y, as ATen's
/// max_pool2d backward computes it: 0 + grad_y[k] at output k's position (0 + -0 is +0), +0
/// elsewhere, including an odd last row or column. grad_x: planes * height * width floats, every
/// one written; sizes and positions as max_pool2x2_with_positions_cpu's.
void max_pool2x2_backward_cpu(const float* grad_y, const uint8_t* positions, int64_t planes, int64_t height,
                              int64_t width, float* grad_x);

}  // namespace bitrobust::kernels
