// CUDA twins of src/kernels/cpu/quantize_cpu.cpp: the same per-element functions from
// bitrobust/quant/quantize_math.h, so codes and values agree bit for bit with the CPU (built with
// --fmad=false; divisions are IEEE divisions on both sides, see NOTE [Quantization formulas]).
#include <cuda_runtime.h>

#include <algorithm>
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

}  // namespace bitrobust::kernels
