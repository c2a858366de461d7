// CUDA kernels for bit error injection, bit-identical to bit_errors_cpu.cpp; see
// NOTE [Bit error sampling]. Built with --fmad=false (NOTE [Deterministic math]).
//
// Two kernels per batch of tensors, on the caller's stream: a coalesced copy clean -> out (one warp
// per chunk, 16-byte accesses when aligned), then the flips (one thread per chunk, in place on out).
// Task tables travel by value as __grid_constant__ kernel parameters (kMaxTasksPerLaunch per launch),
// so nothing is allocated, nothing is copied per thread, and the host never synchronises.
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "bitrobust/bits/bit_errors_kernels.h"

namespace bitrobust::bits {
namespace {

constexpr int kMaxTasksPerLaunch = 48;

struct TaskBatch {
  InjectTask tasks[kMaxTasksPerLaunch];
  int64_t chunk_begin[kMaxTasksPerLaunch + 1];  // prefix sums of chunk counts
  int count;
};
static_assert(sizeof(TaskBatch) < 4000, "kernel parameters are limited to 4 KiB");

__device__ __forceinline__ int find_task(const TaskBatch& batch, int64_t global_chunk) {
  int lo = 0, hi = batch.count - 1;  // last task whose chunk_begin <= global_chunk
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (batch.chunk_begin[mid] <= global_chunk) lo = mid; else hi = mid - 1;
  }
  return lo;
}

__global__ void copy_chunks_kernel(__grid_constant__ const TaskBatch batch) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= batch.chunk_begin[batch.count]) return;
  const int t = find_task(batch, warp);
  const InjectTask& task = batch.tasks[t];
  if (task.clean == task.out) return;
  const int64_t chunk = warp - batch.chunk_begin[t];
  const int64_t total_bytes = task.numel * task.elem_bytes;
  const int64_t begin = chunk * kChunkElements * task.elem_bytes;
  const int64_t end = min(total_bytes, begin + kChunkElements * task.elem_bytes);
  const char* src = static_cast<const char*>(task.clean);
  char* dst = static_cast<char*>(task.out);
  if (((reinterpret_cast<uintptr_t>(src) | reinterpret_cast<uintptr_t>(dst)) & 15) == 0) {
    const int64_t vec_end = begin + (end - begin) / 16 * 16;
    for (int64_t i = begin + 16 * lane; i < vec_end; i += 16 * 32) {
      *reinterpret_cast<uint4*>(dst + i) = *reinterpret_cast<const uint4*>(src + i);
    }
    for (int64_t i = vec_end + lane; i < end; i += 32) dst[i] = src[i];
  } else {
    for (int64_t i = begin + lane; i < end; i += 32) dst[i] = src[i];
  }
}

template <typename T>
__device__ int64_t flip_chunk(const InjectTask& task, int64_t chunk, uint64_t seed) {
  T* codes = static_cast<T*>(task.out) + chunk * kChunkElements;
  const int64_t valid = min(kChunkElements, task.numel - chunk * kChunkElements);
  const BitErrorParams params = task.params;
  int64_t changed = 0;
  for_each_selected_bit<chunk_bitmap_words(8 * sizeof(T))>(
      params, seed, task.param_index, chunk, [&](int32_t element, int32_t bit, double s) {
        if (element >= valid) return;
        const T mask = static_cast<T>(T{1} << bit);
        const T code = codes[element];
        const bool one = (code & mask) != 0;
        if (one ? s < params.threshold_1to0 : s < params.threshold_0to1) {
          codes[element] = static_cast<T>(code ^ mask);
          ++changed;
        }
      });
  return changed;
}

__global__ void flip_chunks_kernel(__grid_constant__ const TaskBatch batch, uint64_t seed, unsigned long long* changed_count) {
  const int64_t global_chunk = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (global_chunk >= batch.chunk_begin[batch.count]) return;
  const int t = find_task(batch, global_chunk);
  const InjectTask& task = batch.tasks[t];
  if (!task.params.active()) return;
  const int64_t chunk = global_chunk - batch.chunk_begin[t];
  int64_t changed;
  switch (task.elem_bytes) {
    case 1: changed = flip_chunk<uint8_t>(task, chunk, seed); break;
    case 2: changed = flip_chunk<uint16_t>(task, chunk, seed); break;
    default: changed = flip_chunk<uint32_t>(task, chunk, seed); break;
  }
  if (changed_count != nullptr && changed > 0) {
    atomicAdd(changed_count, static_cast<unsigned long long>(changed));
  }
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": CUDA error: " + cudaGetErrorString(err));
  }
}

// Device-side 32-bit atomics on the aligned word that holds the element: there are no byte atomics.
__device__ __forceinline__ unsigned int* containing_word(void* element_ptr, int& shift) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(element_ptr);
  shift = static_cast<int>(address & 3) * 8;  // little-endian
  return reinterpret_cast<unsigned int*>(address & ~uintptr_t{3});
}

__global__ void apply_selected_kernel(char* codes, int32_t elem_bytes, const SelectedBit* bits,
                                      int64_t count, unsigned long long* changed_count) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const SelectedBit selected = bits[i];
  int shift;
  unsigned int* word = containing_word(codes + selected.element * elem_bytes, shift);
  const unsigned int mask = 1u << (shift + selected.bit);
  unsigned int before;
  bool changed;
  switch (selected.kind) {
    case FlipKind::Flip: atomicXor(word, mask); changed = true; break;
    case FlipKind::Set0: before = atomicAnd(word, ~mask); changed = (before & mask) != 0; break;
    default: before = atomicOr(word, mask); changed = (before & mask) == 0; break;
  }
  if (changed_count != nullptr && changed) atomicAdd(changed_count, 1ull);
}

}  // namespace

void inject_bit_errors_cuda(const InjectTask* tasks, int64_t num_tasks, uint64_t seed,
                            unsigned long long* changed_count, void* stream) {
  const cudaStream_t cuda_stream = static_cast<cudaStream_t>(stream);
  for (int64_t first = 0; first < num_tasks; first += kMaxTasksPerLaunch) {
    TaskBatch batch{};
    batch.count = static_cast<int>(std::min<int64_t>(kMaxTasksPerLaunch, num_tasks - first));
    batch.chunk_begin[0] = 0;
    bool any_copy = false;
    for (int t = 0; t < batch.count; ++t) {
      const InjectTask& task = tasks[first + t];
      if (task.elem_bytes != 1 && task.elem_bytes != 2 && task.elem_bytes != 4) {
        throw std::invalid_argument("inject_bit_errors_cuda: elem_bytes must be 1, 2 or 4");
      }
      if (task.params.bit_count > 0 &&
          (task.params.bit_lo < 0 || task.params.bit_lo + task.params.bit_count > 8 * task.elem_bytes)) {
        throw std::invalid_argument("inject_bit_errors_cuda: bit range outside the element");
      }
      batch.tasks[t] = task;
      batch.chunk_begin[t + 1] = batch.chunk_begin[t] + (task.numel + kChunkElements - 1) / kChunkElements;
      any_copy = any_copy || (task.clean != task.out && task.numel > 0);
    }
    const int64_t chunks = batch.chunk_begin[batch.count];
    if (chunks == 0) continue;
    if (any_copy) {
      constexpr int kThreads = 256;  // 8 chunks per block
      const int64_t blocks = (chunks * 32 + kThreads - 1) / kThreads;
      copy_chunks_kernel<<<static_cast<unsigned int>(blocks), kThreads, 0, cuda_stream>>>(batch);
      check_launch("inject_bit_errors_cuda (copy)");
    }
    constexpr int kThreads = 128;
    const int64_t blocks = (chunks + kThreads - 1) / kThreads;
    flip_chunks_kernel<<<static_cast<unsigned int>(blocks), kThreads, 0, cuda_stream>>>(batch, seed, changed_count);
    check_launch("inject_bit_errors_cuda (flips)");
  }
}

void apply_selected_bits_cuda(void* codes, int32_t elem_bytes, const SelectedBit* bits, int64_t count,
                              unsigned long long* changed_count, void* stream) {
  if (elem_bytes != 1 && elem_bytes != 2 && elem_bytes != 4) {
    throw std::invalid_argument("apply_selected_bits_cuda: elem_bytes must be 1, 2 or 4");
  }
  if (count == 0) return;
  constexpr int kThreads = 256;
  const int64_t blocks = (count + kThreads - 1) / kThreads;
  apply_selected_kernel<<<static_cast<unsigned int>(blocks), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<char*>(codes), elem_bytes, bits, count, changed_count);
  check_launch("apply_selected_bits_cuda");
}

}  // namespace bitrobust::bits
