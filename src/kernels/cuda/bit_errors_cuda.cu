// CUDA kernels for bit error injection, bit-identical to bit_errors_cpu.cpp; see
// NOTE [Bit error sampling]. Built with --fmad=false (NOTE [Deterministic math]).
//
// One kernel per batch of tensors, on the caller's stream, one warp per chunk: the warp copies the
// chunk clean -> out (16-byte accesses when aligned), then draws its selected bits in rounds of 32
// (NOTE [Group sampler]) and applies them with 32-bit atomics (lanes may hit bits of one word), and
// in inject_dequantize_cuda then dequantizes the chunk's codes into the float weights.
// Task tables travel by value as __grid_constant__ kernel parameters (as many tasks per launch as fit
// in 4 KiB), so nothing is allocated, nothing is copied per thread, and the host never synchronises.
#include <algorithm>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "bitrobust/bits/bit_errors_kernels.h"
#include "bitrobust/quant/quantize_math.h"
#include "kernels/cuda/cuda_launch.h"

namespace bitrobust::bits {
namespace {

__host__ __device__ __forceinline__ const InjectTask& inject_of(const InjectTask& task) { return task; }
__host__ __device__ __forceinline__ const InjectTask& inject_of(const InjectDequantizeTask& task) { return task.inject; }

// Kernel parameters are limited to 4 KiB: 48 injection tasks or 32 with their dequantization.
template <typename Task>
constexpr int kMaxTasksPerLaunch = std::min<int>(48, (4000 - 64) / (sizeof(Task) + sizeof(int64_t)));

template <typename Task>
struct TaskBatch {
  Task tasks[kMaxTasksPerLaunch<Task>];
  int64_t chunk_begin[kMaxTasksPerLaunch<Task> + 1];  // prefix sums of chunk counts
  int count;
};
static_assert(sizeof(TaskBatch<InjectTask>) < 4000 && sizeof(TaskBatch<InjectDequantizeTask>) < 4000,
              "kernel parameters are limited to 4 KiB");

template <typename Task>
__device__ __forceinline__ int find_task(const TaskBatch<Task>& batch, int64_t global_chunk) {
  int lo = 0, hi = batch.count - 1;  // last task whose chunk_begin <= global_chunk
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (batch.chunk_begin[mid] <= global_chunk) lo = mid; else hi = mid - 1;
  }
  return lo;
}

constexpr int kWarpsPerBlock = 8;

// A warp's share of the block's shared memory: the round exchange and the chunk's chosen-bit bitmap
// (kChunkElements * 32 bits for 32-bit codes; fewer words are used for narrower ones).
struct WarpScratch {
  GroupRound<32> round;
  uint64_t chosen[chunk_bitmap_words(32)];
};

__device__ void copy_chunk(const InjectTask& task, int64_t chunk, int lane) {
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

// Device-side 32-bit atomics on the aligned word that holds the element: there are no byte atomics.
// At a chunk's edge (a tensor at an odd offset, or tensors packed in one buffer) that word also holds
// bytes another warp copies with plain stores. The PTX memory model calls such a mixed-size pair a
// race; the hardware writes a byte store under its byte mask, so neither update is lost, and the
// identity check on a GPU (misaligned tensors included) compares every byte with the CPU's.
__device__ __forceinline__ unsigned int* containing_word(void* element_ptr, int& shift) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(element_ptr);
  shift = static_cast<int>(address & 3) * 8;  // little-endian
  return reinterpret_cast<unsigned int*>(address & ~uintptr_t{3});
}

// Applies one selected bit; returns whether it changed. A selected bit flips, or is set to the value
// its kind names (FlipKind), which is the CPU's test of the bit's value against the two thresholds.
__device__ __forceinline__ bool apply_bit(void* element_ptr, int bit, FlipKind kind) {
  int shift;
  unsigned int* word = containing_word(element_ptr, shift);
  const unsigned int mask = 1u << (shift + bit);
  switch (kind) {
    case FlipKind::Flip: atomicXor(word, mask); return true;
    case FlipKind::Set0: return (atomicAnd(word, ~mask) & mask) != 0;
    default: return (atomicOr(word, mask) & mask) == 0;
  }
}

// The warp's selected bits of one chunk, applied to out (copied already); returns this lane's count.
template <typename T>
__device__ int flip_chunk_warp(const InjectTask& task, int64_t chunk, uint64_t seed, WarpScratch& scratch, int lane) {
  const BitErrorParams& params = task.params;
  const uint64_t key = chunk_key(param_key_prefix(seed, task.param_index), chunk);
  // NOTE [Empty chunk shortcut]: the same value in every lane, so the whole warp leaves together.
  if (first_chunk_uniform(key) <= params.empty_chunk_v_max) return 0;
  const uint32_t n = static_cast<uint32_t>(kChunkElements) * static_cast<uint32_t>(params.bit_count);
  for (uint32_t w = lane; w < (n >> 6); w += 32) scratch.chosen[w] = 0;
  T* codes = static_cast<T*>(task.out) + chunk * kChunkElements;
  const int64_t valid = min(kChunkElements, task.numel - chunk * kChunkElements);
  const double t_max = params.threshold_max();
  GroupRound<32>& round = scratch.round;
  BitmapView chosen{scratch.chosen};
  double s = 0.0;  // lane 0's running sum
  int changed = 0;
  for (uint32_t j0 = 0;; j0 += 32) {
    group_draw(round, lane, key, j0, n);
    __syncwarp();  // (also orders the bitmap's clearing and the last round's reads before lane 0 writes)
    if (lane == 0) group_select(round, key, j0, n, t_max, s, chosen);
    __syncwarp();
    if (lane < round.count) {
      const uint32_t b = round.position[lane];
      const int32_t element = static_cast<int32_t>(b & (kChunkElements - 1));
      if (element < valid) {
        changed += apply_bit(codes + element, params.bit_lo + static_cast<int>(b >> kChunkShift),
                             params.kind_of(round.s[lane]));
      }
    }
    if (round.done) break;
  }
  return changed;
}

// The chunk's codes in out (final) dequantized into the task's weights, as dequantize_many_cpu does.
template <bool Signed, bool Asymmetric, typename Container>
__device__ void dequantize_chunk_as(const InjectDequantizeTask& task, int64_t chunk, int lane) {
  const int64_t numel = task.inject.numel;
  const int64_t begin = chunk * kChunkElements, end = min(numel, begin + kChunkElements);
  const int64_t per_channel = numel / task.channels;
  const Container* codes = static_cast<const Container*>(task.inject.out);
  // A chunk inside one channel (all of them under per-tensor ranges) has one step and offset: they
  // are computed once, not per element with a 64-bit division for the channel.
  const int64_t first_channel = task.channels == 1 ? 0 : begin / per_channel;
  const bool one_channel = task.channels == 1 || first_channel == (end - 1) / per_channel;
  const kernels::QuantParams chunk_p = kernels::make_quant_params(task.ranges[first_channel], task.format);
  for (int64_t i = begin + lane; i < end; i += 32) {
    const kernels::QuantParams p =
        one_channel ? chunk_p : kernels::make_quant_params(task.ranges[i / per_channel], task.format);
    task.weights[i] = kernels::dequantize_value<Asymmetric>(kernels::value_of_pattern<Signed>(codes[i], p), p);
  }
}

// The format's branches are the same in every lane (one task per warp).
__device__ void dequantize_chunk(const InjectDequantizeTask& task, int64_t chunk, int lane) {
  const bool wide = task.inject.elem_bytes == 2;
  if (task.format.is_signed) {
    if (task.format.asymmetric) {
      wide ? dequantize_chunk_as<true, true, uint16_t>(task, chunk, lane)
           : dequantize_chunk_as<true, true, uint8_t>(task, chunk, lane);
    } else {
      wide ? dequantize_chunk_as<true, false, uint16_t>(task, chunk, lane)
           : dequantize_chunk_as<true, false, uint8_t>(task, chunk, lane);
    }
  } else if (task.format.asymmetric) {
    wide ? dequantize_chunk_as<false, true, uint16_t>(task, chunk, lane)
         : dequantize_chunk_as<false, true, uint8_t>(task, chunk, lane);
  } else {
    wide ? dequantize_chunk_as<false, false, uint16_t>(task, chunk, lane)
         : dequantize_chunk_as<false, false, uint8_t>(task, chunk, lane);
  }
}

template <typename Task>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    inject_chunks_kernel(__grid_constant__ const TaskBatch<Task> batch, uint64_t seed,
                         unsigned long long* changed_count) {
  __shared__ WarpScratch scratch[kWarpsPerBlock];
  const int warp_in_block = static_cast<int>(threadIdx.x / 32);
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int64_t global_chunk = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp_in_block;
  if (global_chunk >= batch.chunk_begin[batch.count]) return;  // (whole warps)
  const int t = find_task(batch, global_chunk);
  const InjectTask& task = inject_of(batch.tasks[t]);
  const int64_t chunk = global_chunk - batch.chunk_begin[t];
  if (task.clean != task.out) copy_chunk(task, chunk, lane);
  const bool active = task.params.active();  // (the same in every lane, as every branch below)
  int changed = 0;
  if (active) {
    __syncwarp();  // the chunk's copy is visible to every lane before any flip
    switch (task.elem_bytes) {
      case 1: changed = flip_chunk_warp<uint8_t>(task, chunk, seed, scratch[warp_in_block], lane); break;
      case 2: changed = flip_chunk_warp<uint16_t>(task, chunk, seed, scratch[warp_in_block], lane); break;
      default: changed = flip_chunk_warp<uint32_t>(task, chunk, seed, scratch[warp_in_block], lane); break;
    }
  }
  if constexpr (std::is_same_v<Task, InjectDequantizeTask>) {
    __syncwarp();  // every lane's copies and flips are visible before the chunk's codes are read
    dequantize_chunk(batch.tasks[t], chunk, lane);
  }
  if (changed_count == nullptr || !active) return;
  for (int offset = 16; offset > 0; offset /= 2) changed += __shfl_down_sync(0xffffffffu, changed, offset);
  if (lane == 0 && changed > 0) atomicAdd(changed_count, static_cast<unsigned long long>(changed));
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": CUDA error: " + cudaGetErrorString(err));
  }
}

__global__ void apply_selected_kernel(char* codes, int32_t elem_bytes, const SelectedBit* bits,
                                      int64_t count, unsigned long long* changed_count) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const SelectedBit selected = bits[i];
  const bool changed = apply_bit(codes + selected.element * elem_bytes, selected.bit, selected.kind);
  if (changed_count != nullptr && changed) atomicAdd(changed_count, 1ull);
}

bool elements_aligned(const void* p, int32_t elem_bytes) {
  return p != nullptr && reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(elem_bytes) == 0;
}

void check_inject_task(const char* what, const InjectTask& task) {
  if (task.elem_bytes != 1 && task.elem_bytes != 2 && task.elem_bytes != 4) {
    throw std::invalid_argument(std::string(what) + ": elem_bytes must be 1, 2 or 4");
  }
  if (task.params.bit_count > 0 &&
      (task.params.bit_lo < 0 || task.params.bit_lo + task.params.bit_count > 8 * task.elem_bytes)) {
    throw std::invalid_argument(std::string(what) + ": bit range outside the element");
  }
  // apply_bit changes an element through the aligned 32-bit word that holds it: an element that
  // straddles two words (a 2-byte code at an odd address) would get a shift of 32 or more.
  if (task.numel > 0 && (!elements_aligned(task.out, task.elem_bytes) || !elements_aligned(task.clean, task.elem_bytes))) {
    throw std::invalid_argument(std::string(what) + ": codes must be non-null and aligned to their element size");
  }
}

// Launches the tasks in batches; every task is checked before the first launch.
template <typename Task>
void launch_inject(const char* what, const Task* tasks, int64_t num_tasks, uint64_t seed,
                   unsigned long long* changed_count, cudaStream_t stream) {
  for (int64_t t = 0; t < num_tasks; ++t) check_inject_task(what, inject_of(tasks[t]));
  constexpr int kMax = kMaxTasksPerLaunch<Task>;
  for (int64_t first = 0; first < num_tasks; first += kMax) {
    TaskBatch<Task> batch{};
    batch.count = static_cast<int>(std::min<int64_t>(kMax, num_tasks - first));
    batch.chunk_begin[0] = 0;
    bool any_work = false;  // a copy, a pattern or a dequantization
    for (int t = 0; t < batch.count; ++t) {
      const InjectTask& task = inject_of(tasks[first + t]);
      batch.tasks[t] = tasks[first + t];
      batch.chunk_begin[t + 1] = batch.chunk_begin[t] + (task.numel + kChunkElements - 1) / kChunkElements;
      any_work = any_work || std::is_same_v<Task, InjectDequantizeTask> || (task.clean != task.out && task.numel > 0) ||
                 task.params.active();
    }
    const int64_t chunks = batch.chunk_begin[batch.count];
    if (chunks == 0 || !any_work) continue;
    const int64_t blocks = (chunks + kWarpsPerBlock - 1) / kWarpsPerBlock;
    BR_LAUNCH(inject_chunks_kernel<Task>, static_cast<unsigned int>(blocks), kWarpsPerBlock * 32, 0, stream)(
        batch, seed, changed_count);
    check_launch(what);
  }
}

}  // namespace

void inject_bit_errors_cuda(const InjectTask* tasks, int64_t num_tasks, uint64_t seed,
                            unsigned long long* changed_count, void* stream) {
  launch_inject("inject_bit_errors_cuda", tasks, num_tasks, seed, changed_count, static_cast<cudaStream_t>(stream));
}

void inject_dequantize_cuda(const InjectDequantizeTask* tasks, int64_t num_tasks, uint64_t seed,
                            unsigned long long* changed_count, void* stream) {
  constexpr const char* what = "inject_dequantize_cuda";
  for (int64_t t = 0; t < num_tasks; ++t) {
    const InjectDequantizeTask& task = tasks[t];
    if (task.inject.numel == 0) continue;  // no codes (their pointers may be null), no channels
    kernels::check_quant_kernel_args(what, task.inject.numel, task.channels, task.format);
    if (task.inject.elem_bytes != kernels::code_container_bytes(task.format.bits)) {
      throw std::invalid_argument(std::string(what) + ": codes must be in their format's container");
    }
    // The dequantization reads whole codes and writes whole floats: a misaligned or null pointer
    // would fault on the device and leave the CUDA context unusable, where here it is an exception.
    const auto aligned = [](const void* p, size_t to) { return p != nullptr && reinterpret_cast<uintptr_t>(p) % to == 0; };
    if (!aligned(task.inject.clean, task.inject.elem_bytes) || !aligned(task.inject.out, task.inject.elem_bytes) ||
        !aligned(task.weights, alignof(float)) || !aligned(task.ranges, alignof(kernels::QuantRange))) {
      throw std::invalid_argument(std::string(what) + ": codes, weights and ranges must be non-null and aligned to their type");
    }
  }
  launch_inject(what, tasks, num_tasks, seed, changed_count, static_cast<cudaStream_t>(stream));
}

void apply_selected_bits_cuda(void* codes, int32_t elem_bytes, const SelectedBit* bits, int64_t count,
                              unsigned long long* changed_count, void* stream) {
  if (elem_bytes != 1 && elem_bytes != 2 && elem_bytes != 4) {
    throw std::invalid_argument("apply_selected_bits_cuda: elem_bytes must be 1, 2 or 4");
  }
  if (count == 0) return;
  if (!elements_aligned(codes, elem_bytes)) {
    throw std::invalid_argument("apply_selected_bits_cuda: codes must be non-null and aligned to their element size");
  }
  constexpr int kThreads = 256;
  const int64_t blocks = (count + kThreads - 1) / kThreads;
  BR_LAUNCH(apply_selected_kernel, static_cast<unsigned int>(blocks), kThreads, 0, static_cast<cudaStream_t>(stream))(
      static_cast<char*>(codes), elem_bytes, bits, count, changed_count);
  check_launch("apply_selected_bits_cuda");
}

}  // namespace bitrobust::bits
