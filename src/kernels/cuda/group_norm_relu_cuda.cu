// CUDA twin of src/kernels/cpu/group_norm_relu_cpu.cpp, see NOTE [Fused GroupNorm + ReLU] in
// bitrobust/models/group_norm_relu_kernels.h: one launch does the statistics, the normalization and
// the ReLU, where eager LibTorch runs a statistics kernel, an apply kernel and a ReLU kernel.
//
// Mapping: each group (n, g) is handled by kGroupThreads consecutive threads of a 256-thread block,
// kGroupThreads chosen per launch (8 to 256) so that each thread has about four elements or more;
// small groups (the [N, C] input of a linear layer: 8 elements per group) share a block instead of
// leaving most of a block idle, large ones (SimpleNet's first layer: 2048) get the whole block.
// The group's threads read it once from global memory into shared memory (when it fits in 48 KB)
// and make the two statistics passes and the write pass from there, so global memory sees one read
// and one write per element. Each thread rereads only the shared elements it wrote itself, so the
// cache needs no barrier of its own.
#include <cstdint>
#include <limits>

#include "bitrobust/common/error.h"
#include "bitrobust/models/group_norm_relu_kernels.h"
#include "kernels/cuda/cuda_launch.h"

namespace bitrobust::kernels {
namespace {

constexpr int kBlockThreads = 256;
constexpr int kWarp = 32;
// Static and dynamic shared memory together may not pass 48 KB without opting in
// (cudaFuncSetAttribute): the group cache gets what the kernel's reduction scratch leaves.
constexpr int64_t kScratchBytes = (kBlockThreads / kWarp) * sizeof(float2);
constexpr int64_t kCacheBytesMax = 48 * 1024 - kScratchBytes;

/// Division of 32-bit unsigned dividends below 2^31 by a divisor fixed per launch, with a
/// multiply-high, an add and a shift instead of the dozens of instructions of an integer division
/// (the method of PyTorch's IntDivider). Here: element index within a group / spatial size =
/// channel within the group, once per element.
struct FastDivider {
  uint32_t magic = 1;
  uint32_t shift = 0;

  explicit FastDivider(uint32_t divisor) {  // 1 <= divisor < 2^31
    while (shift < 32 && (uint32_t{1} << shift) < divisor) ++shift;
    const uint64_t one = 1;
    magic = static_cast<uint32_t>(((one << 32) * ((one << shift) - divisor)) / divisor + 1);
  }
  __device__ __forceinline__ uint32_t divide(uint32_t n) const {
    return (__umulhi(n, magic) + n) >> shift;
  }
};

/// Sum of v over the kGroupThreads consecutive threads of one group (a power of two, aligned within
/// the block). Every thread of the block must call it, as it may synchronise the block; every
/// thread of the group gets the same sum, bit for bit (butterfly additions are commutative pairs).
template <int kGroupThreads>
__device__ __forceinline__ float2 group_sum(float2 v, float2* scratch) {
  constexpr int kLanes = kGroupThreads < kWarp ? kGroupThreads : kWarp;
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset /= 2) {
    v.x += __shfl_xor_sync(0xffffffffu, v.x, offset);
    v.y += __shfl_xor_sync(0xffffffffu, v.y, offset);
  }
  if constexpr (kGroupThreads > kWarp) {
    constexpr int kWarpsPerGroup = kGroupThreads / kWarp;
    const int warp = threadIdx.x / kWarp;
    if (threadIdx.x % kWarp == 0) scratch[warp] = v;
    __syncthreads();
    const int first_warp = warp / kWarpsPerGroup * kWarpsPerGroup;
    float2 total = scratch[first_warp];
#pragma unroll
    for (int w = 1; w < kWarpsPerGroup; ++w) {
      total.x += scratch[first_warp + w].x;
      total.y += scratch[first_warp + w].y;
    }
    __syncthreads();  // scratch is reused by the next call
    v = total;
  }
  return v;
}

template <int kGroupThreads>
__global__ void __launch_bounds__(kBlockThreads)
    group_norm_relu_kernel(const float* __restrict__ x, int64_t group_count, int64_t groups,
                           uint32_t group_size, uint32_t channels_per_group,
                           FastDivider spatial_divider, const float* __restrict__ scale,
                           const float* __restrict__ bias, const float* __restrict__ input_bias,
                           float eps, bool cached, float* __restrict__ y) {
  constexpr int kGroupsPerBlock = kBlockThreads / kGroupThreads;
  BR_DYNAMIC_SHARED(float, cache);  // kGroupsPerBlock * group_size floats when `cached`
  __shared__ float2 scratch[kScratchBytes / sizeof(float2)];

  const int slot = threadIdx.x / kGroupThreads;
  const uint32_t lane = threadIdx.x % kGroupThreads;
  const int64_t ng = static_cast<int64_t>(blockIdx.x) * kGroupsPerBlock + slot;
  // The last block may hold fewer groups; its idle threads still take part in the reductions.
  const bool active = ng < group_count;
  const float* xg = x + (active ? ng * group_size : 0);
  float* cg = cached ? cache + static_cast<size_t>(slot) * group_size : nullptr;
  const float count = static_cast<float>(group_size);
  const int64_t first_channel = (ng % groups) * channels_per_group;
  // The input is x + input_bias (per channel) when a convolution's bias is left to this kernel: the
  // same float addition as the convolution's own bias pass, so the same values, without that pass.
  const float* in_bias_g = input_bias != nullptr ? input_bias + first_channel : nullptr;
  auto input = [&](uint32_t i) {
    return in_bias_g != nullptr ? xg[i] + in_bias_g[spatial_divider.divide(i)] : xg[i];
  };

  // Pass 1: the sum of x - shift, shift being the group's first element. Sums of deviations from a
  // value inside the data stay small where sums of x near 1000 would round away the noise.
  const float shift = active ? input(0) : 0.0f;
  float partial = 0.0f;
  if (active) {
    for (uint32_t i = lane; i < group_size; i += kGroupThreads) {
      const float v = input(i);
      if (cached) cg[i] = v;
      partial += v - shift;
    }
  }
  const float mean_shifted = group_sum<kGroupThreads>(make_float2(partial, 0.0f), scratch).x / count;
  // The mean as a float pair: mean_hi + mean_lo == shift + mean_shifted exactly (TwoSum).
  const float mean_hi = shift + mean_shifted;
  const float shift_part = mean_hi - mean_shifted;
  float mean_lo = (shift - shift_part) + (mean_shifted - (mean_hi - shift_part));

  // Pass 2: deviations from the pair. Their sum is the error left in the mean (corrected two-pass).
  float2 deviations = make_float2(0.0f, 0.0f);
  if (active) {
    for (uint32_t i = lane; i < group_size; i += kGroupThreads) {
      const float d = ((cached ? cg[i] : input(i)) - mean_hi) - mean_lo;
      deviations.x += d;
      deviations.y += d * d;
    }
  }
  deviations = group_sum<kGroupThreads>(deviations, scratch);
  const float correction = deviations.x / count;
  const float variance = fmaxf(0.0f, deviations.y / count - correction * correction);
  const float rstd = 1.0f / sqrtf(variance + eps);
  mean_lo += correction;

  // Pass 3: normalize, scale, shift, ReLU (`v < 0 ? 0 : v` lets NaN through, as at::relu does).
  if (!active) return;
  const float* scale_g = scale + first_channel;
  const float* bias_g = bias + first_channel;
  float* yg = y + ng * group_size;
  for (uint32_t i = lane; i < group_size; i += kGroupThreads) {
    const uint32_t c = spatial_divider.divide(i);
    const float x_c = cached ? cg[i] : (in_bias_g != nullptr ? xg[i] + in_bias_g[c] : xg[i]);
    const float v = ((x_c - mean_hi) - mean_lo) * (rstd * scale_g[c]) + bias_g[c];
    yg[i] = v < 0.0f ? 0.0f : v;
  }
}

template <int kGroupThreads>
void launch(const float* x, const GroupNormShape& shape, const float* scale, const float* bias,
            const float* input_bias, float eps, float* y, cudaStream_t stream) {
  constexpr int64_t kGroupsPerBlock = kBlockThreads / kGroupThreads;
  const int64_t group_count = shape.batch * shape.groups;
  const int64_t blocks = (group_count + kGroupsPerBlock - 1) / kGroupsPerBlock;
  BR_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "group_norm_relu_cuda: ", group_count,
           " groups are more than one launch takes");
  const int64_t cache_bytes = kGroupsPerBlock * shape.group_size() * static_cast<int64_t>(sizeof(float));
  const bool cached = cache_bytes <= kCacheBytesMax;
  BR_LAUNCH(group_norm_relu_kernel<kGroupThreads>, static_cast<unsigned>(blocks), kBlockThreads,
            cached ? static_cast<size_t>(cache_bytes) : 0, stream)(
      x, group_count, shape.groups, static_cast<uint32_t>(shape.group_size()),
      static_cast<uint32_t>(shape.channels / shape.groups), FastDivider(static_cast<uint32_t>(shape.spatial)), scale,
      bias, input_bias, eps, cached, y);
}

}  // namespace

void group_norm_relu_cuda(const float* x, const GroupNormShape& shape, const float* scale,
                          const float* bias, const float* input_bias, double eps, float* y,
                          void* stream) {
  check_group_norm_shape("group_norm_relu_cuda", shape, eps);
  BR_CHECK(!shape.channels_last || shape.spatial <= 1,
           "group_norm_relu_cuda: channels-last input is not supported on CUDA (the CPU kernels' form)");
  const int64_t group_size = shape.group_size();
  if (shape.batch == 0 || group_size == 0) return;
  // 32-bit indices within a group (and FastDivider's range).
  BR_CHECK(group_size < (int64_t{1} << 31), "group_norm_relu_cuda: a group of ", group_size,
           " elements is larger than the 2^31 - 1 supported");
  int group_threads = 8;
  while (group_threads < kBlockThreads && group_threads * 4 < group_size) group_threads *= 2;
  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  const float eps_f = static_cast<float>(eps);
  switch (group_threads) {
    case 8: launch<8>(x, shape, scale, bias, input_bias, eps_f, y, cuda_stream); break;
    case 16: launch<16>(x, shape, scale, bias, input_bias, eps_f, y, cuda_stream); break;
    case 32: launch<32>(x, shape, scale, bias, input_bias, eps_f, y, cuda_stream); break;
    case 64: launch<64>(x, shape, scale, bias, input_bias, eps_f, y, cuda_stream); break;
    case 128: launch<128>(x, shape, scale, bias, input_bias, eps_f, y, cuda_stream); break;
    default: launch<kBlockThreads>(x, shape, scale, bias, input_bias, eps_f, y, cuda_stream); break;
  }
  const cudaError_t status = cudaGetLastError();
  BR_CHECK(status == cudaSuccess, "group_norm_relu_cuda: kernel launch failed: ",
           cudaGetErrorString(status));
}

}  // namespace bitrobust::kernels
