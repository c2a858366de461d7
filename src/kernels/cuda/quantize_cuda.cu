// CUDA twins of src/kernels/cpu/quantize_cpu.cpp: the same per-element functions from
// bitrobust/quant/quantize_math.h, so codes and values agree bit for bit with the CPU (built with
// --fmad=false; divisions are IEEE divisions on both sides, see NOTE [Quantization formulas]).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "bitrobust/common/error.h"
#include "bitrobust/quant/quantize_kernels.h"
#include "bitrobust/quant/quantize_math.h"

namespace bitrobust::kernels {
namespace {

constexpr int kThreads = 256;

/// Grid-stride loop bounds shared by the kernels; one launch covers any n.
inline unsigned blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::min<int64_t>(blocks, int64_t{1} << 20));
}

__device__ __forceinline__ int64_t channel_of(int64_t i, int64_t per_channel, int64_t channels) {
  return channels == 1 ? 0 : i / per_channel;
}

template <bool Signed, bool Asymmetric, bool Round, typename Container>
__global__ void quantize_kernel(const float* __restrict__ w, int64_t n, int64_t channels,
                                int64_t per_channel, const QuantRange* __restrict__ ranges,
                                QuantFormat f, Container* __restrict__ codes) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const QuantParams p = make_quant_params(ranges[channel_of(i, per_channel, channels)], f);
    const int32_t code = code_of<Signed, Round>(code_units<Asymmetric>(w[i], p), p);
    codes[i] = static_cast<Container>(pattern_of(code, p));
  }
}

template <bool Signed, bool Asymmetric, typename Container>
__global__ void dequantize_kernel(const Container* __restrict__ codes, int64_t n, int64_t channels,
                                  int64_t per_channel, const QuantRange* __restrict__ ranges,
                                  QuantFormat f, float* __restrict__ out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const QuantParams p = make_quant_params(ranges[channel_of(i, per_channel, channels)], f);
    out[i] = dequantize_value<Asymmetric>(value_of_pattern<Signed>(codes[i], p), p);
  }
}

// No __restrict__: out may be w (in-place fake quantization).
template <bool Signed, bool Asymmetric, bool Round>
__global__ void quantize_dequantize_kernel(const float* w, int64_t n, int64_t channels,
                                           int64_t per_channel,
                                           const QuantRange* __restrict__ ranges, QuantFormat f,
                                           float* out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const QuantParams p = make_quant_params(ranges[channel_of(i, per_channel, channels)], f);
    const int32_t code = code_of<Signed, Round>(code_units<Asymmetric>(w[i], p), p);
    out[i] = dequantize_value<Asymmetric>(value_of_code<Signed>(code, p), p);
  }
}

void check_launch(const char* kernel) {
  const cudaError_t status = cudaGetLastError();
  BR_CHECK(status == cudaSuccess, kernel, ": kernel launch failed: ", cudaGetErrorString(status));
}

}  // namespace

void quantize_cuda(const float* w, int64_t n, int64_t channels, const QuantRange* ranges,
                   QuantFormat f, void* codes, void* stream) {
  check_quant_kernel_args("quantize_cuda", n, channels, f);
  if (n == 0) return;
  const int64_t per_channel = n / channels;
  auto cuda_stream = static_cast<cudaStream_t>(stream);
  dispatch_quant_format(f, [&](auto is_signed, auto asymmetric, auto round, auto* container) {
    using Container = std::remove_pointer_t<decltype(container)>;
    quantize_kernel<decltype(is_signed)::value, decltype(asymmetric)::value, decltype(round)::value>
        <<<blocks_for(n), kThreads, 0, cuda_stream>>>(w, n, channels, per_channel, ranges, f,
                                                       static_cast<Container*>(codes));
  });
  check_launch("quantize_cuda");
}

void dequantize_cuda(const void* codes, int64_t n, int64_t channels, const QuantRange* ranges,
                     QuantFormat f, float* out, void* stream) {
  check_quant_kernel_args("dequantize_cuda", n, channels, f);
  if (n == 0) return;
  const int64_t per_channel = n / channels;
  auto cuda_stream = static_cast<cudaStream_t>(stream);
  f.round = false;  // rounding does not enter dequantization
  dispatch_quant_format(f, [&](auto is_signed, auto asymmetric, auto, auto* container) {
    using Container = std::remove_pointer_t<decltype(container)>;
    dequantize_kernel<decltype(is_signed)::value, decltype(asymmetric)::value>
        <<<blocks_for(n), kThreads, 0, cuda_stream>>>(static_cast<const Container*>(codes), n,
                                                       channels, per_channel, ranges, f, out);
  });
  check_launch("dequantize_cuda");
}

void quantize_dequantize_cuda(const float* w, int64_t n, int64_t channels,
                              const QuantRange* ranges, QuantFormat f, float* out, void* stream) {
  check_quant_kernel_args("quantize_dequantize_cuda", n, channels, f);
  if (n == 0) return;
  const int64_t per_channel = n / channels;
  auto cuda_stream = static_cast<cudaStream_t>(stream);
  const int bits = f.bits;
  f.bits = 8;  // the container does not enter the fused path
  dispatch_quant_format(f, [&](auto is_signed, auto asymmetric, auto round, auto*) {
    QuantFormat format = f;
    format.bits = bits;
    quantize_dequantize_kernel<decltype(is_signed)::value, decltype(asymmetric)::value,
                               decltype(round)::value>
        <<<blocks_for(n), kThreads, 0, cuda_stream>>>(w, n, channels, per_channel, ranges, format,
                                                       out);
  });
  check_launch("quantize_dequantize_cuda");
}

namespace {

// NOTE [Device ranges]: min and max per channel by atomics on order-preserving integer keys of the
// floats, written into the ranges buffer itself (two int32 per channel), then turned into the range
// in place. A non-finite element sets the min key to INT_MIN, which no finite float maps to.
__device__ __forceinline__ int32_t order_key(float x) {
  const int32_t bits = __float_as_int(x + 0.0f);  // -0 -> +0
  return bits >= 0 ? bits : bits ^ 0x7FFFFFFF;
}
__device__ __forceinline__ float key_value(int32_t key) {
  return __int_as_float(key >= 0 ? key : key ^ 0x7FFFFFFF);
}
constexpr int32_t kNonFiniteKey = INT32_MIN;

__global__ void init_range_keys_kernel(int32_t* keys, int64_t channels) {
  for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < channels; c += int64_t{gridDim.x} * blockDim.x) {
    keys[2 * c] = INT32_MAX;
    keys[2 * c + 1] = INT32_MIN;
  }
}

// grid.y: channels (strided), grid.x: slices of one channel's elements.
__global__ void channel_minmax_kernel(const float* __restrict__ w, int64_t channels, int64_t per_channel,
                                      int32_t* keys) {
  __shared__ int32_t block_min[kThreads / 32], block_max[kThreads / 32];
  for (int64_t c = blockIdx.y; c < channels; c += gridDim.y) {
    const float* base = w + c * per_channel;
    int32_t lo = INT32_MAX, hi = INT32_MIN;
    for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < per_channel; i += int64_t{gridDim.x} * kThreads) {
      const float x = base[i];
      if (!isfinite(x)) {
        lo = kNonFiniteKey;
        continue;
      }
      const int32_t k = order_key(x);
      lo = k < lo ? k : lo;
      hi = k > hi ? k : hi;
    }
    for (int offset = 16; offset > 0; offset /= 2) {
      const int32_t other_lo = __shfl_down_sync(0xFFFFFFFFu, lo, offset);
      const int32_t other_hi = __shfl_down_sync(0xFFFFFFFFu, hi, offset);
      lo = other_lo < lo ? other_lo : lo;
      hi = other_hi > hi ? other_hi : hi;
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) {
      block_min[warp] = lo;
      block_max[warp] = hi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int i = 1; i < kThreads / 32; ++i) {
        lo = block_min[i] < lo ? block_min[i] : lo;
        hi = block_max[i] > hi ? block_max[i] : hi;
      }
      atomicMin(&keys[2 * c], lo);
      atomicMax(&keys[2 * c + 1], hi);
    }
    __syncthreads();
  }
}

__global__ void ranges_from_keys_kernel(QuantRange* ranges, int64_t channels, RangeRule rule) {
  for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < channels; c += int64_t{gridDim.x} * blockDim.x) {
    const int32_t* keys = reinterpret_cast<const int32_t*>(ranges + c);
    const int32_t lo = keys[0], hi = keys[1];
    if (lo == kNonFiniteKey) {
      ranges[c] = QuantRange{__int_as_float(0x7FC00000), __int_as_float(0x7FC00000)};
    } else {
      ranges[c] = range_of_channel(key_value(lo), key_value(hi), rule);
    }
  }
}

}  // namespace

void compute_ranges_cuda(const float* w, int64_t n, int64_t channels, RangeRule rule, QuantRange* ranges,
                         void* stream) {
  BR_CHECK(channels >= 1 && n >= channels && n % channels == 0, "compute_ranges_cuda: ", n,
           " weights do not split into ", channels, " channels");
  static_assert(sizeof(QuantRange) == 2 * sizeof(int32_t), "keys live in the ranges buffer");
  auto cuda_stream = static_cast<cudaStream_t>(stream);
  auto* keys = reinterpret_cast<int32_t*>(ranges);
  const int64_t per_channel = n / channels;
  const unsigned small_grid = static_cast<unsigned>(std::min<int64_t>((channels + kThreads - 1) / kThreads, 1024));
  init_range_keys_kernel<<<small_grid, kThreads, 0, cuda_stream>>>(keys, channels);
  // About 16 elements per thread, at most 512 slices per channel and 65535 channels per launch row.
  const int64_t slices = std::min<int64_t>((per_channel + kThreads * 16 - 1) / (kThreads * 16), 512);
  const dim3 grid(static_cast<unsigned>(slices), static_cast<unsigned>(std::min<int64_t>(channels, 65535)));
  channel_minmax_kernel<<<grid, kThreads, 0, cuda_stream>>>(w, channels, per_channel, keys);
  ranges_from_keys_kernel<<<small_grid, kThreads, 0, cuda_stream>>>(ranges, channels, rule);
  check_launch("compute_ranges_cuda");
}

}  // namespace bitrobust::kernels
