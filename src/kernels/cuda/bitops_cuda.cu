// CUDA element-wise bit operations, bit-identical to bitops_cpu.cpp (integer work only).
#include <stdexcept>
#include <string>

#include "bitrobust/bits/bitops_kernels.h"
#include "kernels/cuda/cuda_launch.h"
#include "kernels/elem_dispatch.h"

namespace bitrobust::bits {
namespace {

constexpr int kThreads = 256;

unsigned int grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(blocks < 65535 * 16 ? (blocks > 0 ? blocks : 1) : 65535 * 16);
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": CUDA error: " + cudaGetErrorString(err));
}

template <typename T>
__device__ __forceinline__ T highest_bit(T x) {
  uint32_t v = x;
  return v == 0 ? T{0} : static_cast<T>(1u << (31 - __clz(v)));
}

template <typename T>
__device__ __forceinline__ uint8_t popcount(T x) {
  return static_cast<uint8_t>(__popc(static_cast<uint32_t>(x)));
}

template <typename T>
__global__ void binary_kernel(BitBinaryOp op, const T* __restrict__ a, const T* __restrict__ b,
                              T* __restrict__ out, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const T x = a[i], y = b[i];
    T r;
    switch (op) {
      case BitBinaryOp::And: r = static_cast<T>(x & y); break;
      case BitBinaryOp::Or: r = static_cast<T>(x | y); break;
      case BitBinaryOp::Xor: r = static_cast<T>(x ^ y); break;
      case BitBinaryOp::AndNot: r = static_cast<T>(x & ~y); break;
      default: r = highest_bit<T>(static_cast<T>(x ^ y)); break;
    }
    out[i] = r;
  }
}

template <typename T>
__global__ void not_kernel(const T* __restrict__ a, T* __restrict__ out, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = static_cast<T>(~a[i]);
  }
}

template <typename T>
__global__ void popcount_kernel(const T* __restrict__ a, const T* __restrict__ b, uint8_t* __restrict__ out,
                                int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = popcount<T>(b == nullptr ? a[i] : static_cast<T>(a[i] ^ b[i]));
  }
}

template <typename T>
__global__ void hamming_total_kernel(const T* __restrict__ a, const T* __restrict__ b, int64_t n,
                                     unsigned long long* total) {
  unsigned long long sum = 0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    sum += popcount<T>(static_cast<T>(a[i] ^ b[i]));
  }
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
  __shared__ unsigned long long warp_sums[kThreads / 32];
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned long long block_sum = 0;
    for (int w = 0; w < kThreads / 32; ++w) block_sum += warp_sums[w];
    if (block_sum != 0) atomicAdd(total, block_sum);
  }
}

template <typename T>
__global__ void extract_kernel(const T* __restrict__ a, uint8_t* __restrict__ out, int64_t n, int bits) {
  const int64_t total = n * bits;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = static_cast<uint8_t>((a[i / bits] >> (i % bits)) & 1u);
  }
}

}  // namespace

void bitops_binary_cuda(BitBinaryOp op, const void* a, const void* b, void* out, int64_t n, int elem_bytes,
                        void* stream) {
  if (static_cast<int>(op) < 0 || static_cast<int>(op) > 4) throw std::invalid_argument("bitops_binary_cuda: unknown operation");
  if (n == 0) return;
  BR_DISPATCH_ELEM("bitops_binary_cuda", elem_bytes,
                   (BR_LAUNCH(binary_kernel<T>, grid_for(n), kThreads, 0, static_cast<cudaStream_t>(stream))(
                       op, static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(out), n)));
  check_launch("bitops_binary_cuda");
}

void bitops_not_cuda(const void* a, void* out, int64_t n, int elem_bytes, void* stream) {
  if (n == 0) return;
  BR_DISPATCH_ELEM("bitops_not_cuda", elem_bytes,
                   (BR_LAUNCH(not_kernel<T>, grid_for(n), kThreads, 0, static_cast<cudaStream_t>(stream))(
                       static_cast<const T*>(a), static_cast<T*>(out), n)));
  check_launch("bitops_not_cuda");
}

void bitops_popcount_cuda(const void* a, uint8_t* out, int64_t n, int elem_bytes, void* stream) {
  if (n == 0) return;
  BR_DISPATCH_ELEM("bitops_popcount_cuda", elem_bytes,
                   (BR_LAUNCH(popcount_kernel<T>, grid_for(n), kThreads, 0, static_cast<cudaStream_t>(stream))(
                       static_cast<const T*>(a), nullptr, out, n)));
  check_launch("bitops_popcount_cuda");
}

void bitops_hamming_cuda(const void* a, const void* b, uint8_t* out, int64_t n, int elem_bytes, void* stream) {
  if (n == 0) return;
  BR_DISPATCH_ELEM("bitops_hamming_cuda", elem_bytes,
                   (BR_LAUNCH(popcount_kernel<T>, grid_for(n), kThreads, 0, static_cast<cudaStream_t>(stream))(
                       static_cast<const T*>(a), static_cast<const T*>(b), out, n)));
  check_launch("bitops_hamming_cuda");
}

void bitops_hamming_total_cuda(const void* a, const void* b, int64_t n, int elem_bytes,
                               unsigned long long* total, void* stream) {
  if (n == 0) return;
  const unsigned int grid = grid_for(n) < 1024 ? grid_for(n) : 1024;
  BR_DISPATCH_ELEM("bitops_hamming_total_cuda", elem_bytes,
                   (BR_LAUNCH(hamming_total_kernel<T>, grid, kThreads, 0, static_cast<cudaStream_t>(stream))(
                       static_cast<const T*>(a), static_cast<const T*>(b), n, total)));
  check_launch("bitops_hamming_total_cuda");
}

void bitops_extract_cuda(const void* a, uint8_t* out, int64_t n, int elem_bytes, int bits, void* stream) {
  if (bits < 1 || bits > 8 * elem_bytes) throw std::invalid_argument("bitops_extract_cuda: bits out of range");
  if (n == 0) return;
  BR_DISPATCH_ELEM("bitops_extract_cuda", elem_bytes,
                   (BR_LAUNCH(extract_kernel<T>, grid_for(n * bits), kThreads, 0, static_cast<cudaStream_t>(stream))(
                       static_cast<const T*>(a), out, n, bits)));
  check_launch("bitops_extract_cuda");
}

}  // namespace bitrobust::bits
