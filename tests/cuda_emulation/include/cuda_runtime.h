#pragma once
// Stand-in for the CUDA runtime header: what our .cu sources use of CUDA, for compiling them as C++
// and running their kernels on the CPU. NOTE [CUDA emulation] in ../emulator.h.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "../emulator.h"

#define BITROBUST_CUDA_EMULATION 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __shared__ static
#define __grid_constant__
#define __launch_bounds__(...)

#define threadIdx (::bitrobust::cuda_emulation::current_thread().thread_idx)
#define blockIdx (::bitrobust::cuda_emulation::current_thread().block_idx)
#define blockDim (::bitrobust::cuda_emulation::current_thread().block_dim)
#define gridDim (::bitrobust::cuda_emulation::current_thread().grid_dim)
#define warpSize 32

/// kernel<<<grid, block, shared_bytes, stream>>>(args) is written BR_LAUNCH(kernel, grid, block,
/// shared_bytes, stream)(args) in our sources (src/kernels/cuda/cuda_launch.h).
#define BITROBUST_EMULATED_LAUNCH(kernel, grid, block, shared_bytes) \
  ::bitrobust::cuda_emulation::launch(dim3(grid), dim3(block), static_cast<size_t>(shared_bytes), kernel)
/// `extern __shared__ type name[]` is written BR_DYNAMIC_SHARED(type, name) in our sources.
#define BITROBUST_EMULATED_DYNAMIC_SHARED(type) static_cast<type*>(::bitrobust::cuda_emulation::dynamic_shared_memory())

struct alignas(16) uint4 {
  unsigned int x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }

// The runtime API our sources and checks use, over host memory ("device" pointers are host pointers).
typedef struct CUstream_st* cudaStream_t;
typedef struct CUevent_st* cudaEvent_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorMemoryAllocation = 2 };
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
struct cudaDeviceProp {
  char name[256];
};
inline cudaError_t cudaGetLastError() { return cudaSuccess; }  // emulated launches throw instead
inline const char* cudaGetErrorString(cudaError_t error) {
  return error == cudaSuccess ? "no error" : "out of memory";
}
inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int) {
  std::snprintf(prop->name, sizeof prop->name, "CUDA emulation on the CPU (tests/cuda_emulation)");
  return cudaSuccess;
}
inline cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  // 256-byte alignment, as cudaMalloc gives (the kernels' aligned fast paths depend on it).
  const size_t rounded = (bytes + 255) / 256 * 256;
  *ptr = std::aligned_alloc(256, rounded);
  if (*ptr == nullptr) return cudaErrorMemoryAllocation;
  std::memset(*ptr, 0xA5, rounded);  // (what was never written is not zero)
  return cudaSuccess;
}
inline cudaError_t cudaFree(void* ptr) {
  std::free(ptr);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  if (bytes > 0) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                                   cudaStream_t = nullptr) {
  return cudaMemcpy(dst, src, bytes, kind);
}
inline cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
  if (bytes > 0) std::memset(ptr, value, bytes);
  return cudaSuccess;
}
// Events measure host time; emulated timings say nothing about a GPU.
inline cudaError_t cudaEventCreate(cudaEvent_t* event) {
  *event = reinterpret_cast<cudaEvent_t>(new std::chrono::steady_clock::time_point());
  return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t = nullptr) {
  *reinterpret_cast<std::chrono::steady_clock::time_point*>(event) = std::chrono::steady_clock::now();
  return cudaSuccess;
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t stop) {
  const auto& a = *reinterpret_cast<std::chrono::steady_clock::time_point*>(start);
  const auto& b = *reinterpret_cast<std::chrono::steady_clock::time_point*>(stop);
  *ms = std::chrono::duration<float, std::milli>(b - a).count();
  return cudaSuccess;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete reinterpret_cast<std::chrono::steady_clock::time_point*>(event);
  return cudaSuccess;
}

inline int __float_as_int(float x) {
  int bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
}
inline float __int_as_float(int bits) {
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}
using std::isfinite;

inline unsigned int __umulhi(unsigned int a, unsigned int b) {
  return static_cast<unsigned int>((static_cast<uint64_t>(a) * b) >> 32);
}
inline int __clz(unsigned int x) { return x == 0 ? 32 : __builtin_clz(x); }
inline int __popc(unsigned int x) { return __builtin_popcount(x); }

inline void __syncwarp(unsigned int mask = 0xffffffffu) { ::bitrobust::cuda_emulation::warp_barrier(mask); }
inline void __syncthreads() { ::bitrobust::cuda_emulation::block_barrier(); }

// Source lanes as the Programming Guide defines them for groups of `width` lanes.
template <typename T>
T __shfl_sync(unsigned int mask, T value, int source_lane, int width = 32) {
  const int base = ::bitrobust::cuda_emulation::group_base(width);
  return ::bitrobust::cuda_emulation::shuffle(mask, value, base + (source_lane & (width - 1)));
}
template <typename T>
T __shfl_down_sync(unsigned int mask, T value, unsigned int delta, int width = 32) {
  const int base = ::bitrobust::cuda_emulation::group_base(width);
  const int64_t in_group = ::bitrobust::cuda_emulation::lane_in_warp() - base + int64_t{delta};
  return ::bitrobust::cuda_emulation::shuffle(mask, value, in_group < width ? base + static_cast<int>(in_group) : -1);
}
template <typename T>
T __shfl_xor_sync(unsigned int mask, T value, int lane_mask, int width = 32) {
  // (an earlier group may be read; a later one gives the lane its own value)
  const int base = ::bitrobust::cuda_emulation::group_base(width);
  const int source = (::bitrobust::cuda_emulation::lane_in_warp() ^ lane_mask) & 31;
  return ::bitrobust::cuda_emulation::shuffle(mask, value, source < base + width ? source : -1);
}

// Atomics return the old value; threads switch only at barriers, so a plain update is atomic here.
template <typename T, typename Op>
T emulated_atomic(T* address, Op op) {
  const T old = *address;
  *address = op(old);
  return old;
}
template <typename T>
T atomicAdd(T* address, T value) {
  return emulated_atomic(address, [&](T old) { return static_cast<T>(old + value); });
}
template <typename T>
T atomicXor(T* address, T value) {
  return emulated_atomic(address, [&](T old) { return static_cast<T>(old ^ value); });
}
template <typename T>
T atomicAnd(T* address, T value) {
  return emulated_atomic(address, [&](T old) { return static_cast<T>(old & value); });
}
template <typename T>
T atomicOr(T* address, T value) {
  return emulated_atomic(address, [&](T old) { return static_cast<T>(old | value); });
}
template <typename T>
T atomicMax(T* address, T value) {
  return emulated_atomic(address, [&](T old) { return std::max(old, value); });
}
template <typename T>
T atomicMin(T* address, T value) {
  return emulated_atomic(address, [&](T old) { return std::min(old, value); });
}

// CUDA's integer min/max accept mixed types (the usual arithmetic conversions).
template <typename A, typename B, typename = std::enable_if_t<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>>
std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(b) < static_cast<C>(a) ? static_cast<C>(b) : static_cast<C>(a);
}
template <typename A, typename B, typename = std::enable_if_t<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>>
std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(b) : static_cast<C>(a);
}
