// CUDA twins of src/kernels/cpu/quantize_cpu.cpp: the same per-element functions from
// bitrobust/quant/quantize_math.h, so codes and values agree bit for bit with the CPU (built with
// --fmad=false; divisions are IEEE divisions on both sides, see NOTE [Quantization formulas]).
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "bitrobust/common/error.h"
#include "bitrobust/quant/quantize_kernels.h"
#include "bitrobust/quant/quantize_math.h"
#include "kernels/cuda/cuda_launch.h"

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

/// The last t < count with begin[t] <= block: the task a block of a multi-tensor launch works on
/// (tasks without blocks share their begin with the next task and are never chosen).
__device__ __forceinline__ int task_of_block(const int64_t* begin, int count, int64_t block) {
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (begin[mid] <= block) lo = mid; else hi = mid - 1;
  }
  return lo;
}

/// Calls launch(first, size) for consecutive runs of at most max_tasks tasks with equal
/// kernel_of(task) (one template instantiation per launch).
template <typename Task, typename KernelOf, typename Launch>
void in_batches(const Task* tasks, int64_t count, int64_t max_tasks, KernelOf kernel_of, Launch launch) {
  int64_t first = 0;
  for (int64_t t = 1; t <= count; ++t) {
    if (t == count || t - first == max_tasks || kernel_of(tasks[t]) != kernel_of(tasks[first])) {
      launch(first, t - first);
      first = t;
    }
  }
}

inline unsigned checked_grid(int64_t blocks, const char* what) {
  BR_CHECK(blocks <= int64_t{0x7FFFFFFF}, what, ": ", blocks, " blocks exceed one launch");
  return static_cast<unsigned>(blocks);
}


// Multi-tensor kernels: the task table travels by value as a __grid_constant__ parameter (up to
// kMaxTasksPerLaunch tasks of one format per launch); each block of an element-wise kernel takes
// kElementBlock consecutive elements of one task.
constexpr int kMaxTasksPerLaunch = 32;
constexpr int kElementItems = 4;
constexpr int64_t kElementBlock = int64_t{kElementItems} * kThreads;

/// The tasks of one element-wise launch and where each task's blocks begin.
template <typename Task, int kMax = kMaxTasksPerLaunch>
struct ElementBatch {
  Task tasks[kMax];
  int64_t block_begin[kMax + 1];  // prefix sums of the tasks' block counts
  int count;
};

template <typename Task, int kMax>
ElementBatch<Task, kMax> element_batch(const Task* tasks, int64_t size) {
  static_assert(sizeof(ElementBatch<Task, kMax>) < 4000, "kernel parameters are limited to 4 KiB");
  ElementBatch<Task, kMax> batch{};
  batch.count = static_cast<int>(size);
  for (int i = 0; i < batch.count; ++i) {
    batch.tasks[i] = tasks[i];
    batch.block_begin[i + 1] = batch.block_begin[i] + (tasks[i].n + kElementBlock - 1) / kElementBlock;
  }
  return batch;
}

/// Calls fn(task, t, i) for the elements i of task t that this thread handles.
template <typename Task, typename Fn>
__device__ __forceinline__ void for_block_elements(const Task* tasks, const int64_t* block_begin, int count, Fn&& fn) {
  const int64_t block = blockIdx.x;
  const int t = task_of_block(block_begin, count, block);
  const Task& task = tasks[t];
  const int64_t first = (block - block_begin[t]) * kElementBlock + threadIdx.x;
#pragma unroll
  for (int k = 0; k < kElementItems; ++k) {
    const int64_t i = first + int64_t{k} * kThreads;
    if (i < task.n) fn(task, t, i);
  }
}

template <typename Task>
__device__ __forceinline__ int64_t channel_of_element(const Task& task, int64_t i) {
  return task.channels == 1 ? 0 : i / (task.n / task.channels);
}

/// For consecutive runs of tasks with equal kernel_of(task): launch(batch, grid) per batch that has
/// elements.
template <int kMax = kMaxTasksPerLaunch, typename Task, typename KernelOf, typename Launch>
void launch_element_batches(const Task* tasks, int64_t count, const char* what, KernelOf kernel_of, Launch launch) {
  in_batches(tasks, count, kMax, kernel_of, [&](int64_t first, int64_t size) {
    const ElementBatch<Task, kMax> batch = element_batch<Task, kMax>(tasks + first, size);
    const int64_t blocks = batch.block_begin[batch.count];
    if (blocks > 0) launch(batch, checked_grid(blocks, what));
  });
}

template <bool Signed, bool Asymmetric, typename Container>
__global__ void dequantize_many_kernel(__grid_constant__ const ElementBatch<DequantizeTask> batch) {
  for_block_elements(batch.tasks, batch.block_begin, batch.count, [](const DequantizeTask& task, int, int64_t i) {
    const QuantParams p = make_quant_params(task.ranges[channel_of_element(task, i)], task.format);
    const Container code = static_cast<const Container*>(task.codes)[i];
    task.out[i] = dequantize_value<Asymmetric>(value_of_pattern<Signed>(code, p), p);
  });
}

template <bool Signed, bool Asymmetric, bool Round, typename Container>
__global__ void quantize_many_kernel(__grid_constant__ const ElementBatch<QuantizeTask> batch) {
  for_block_elements(batch.tasks, batch.block_begin, batch.count, [](const QuantizeTask& task, int, int64_t i) {
    const QuantParams p = make_quant_params(task.ranges[channel_of_element(task, i)], task.format);
    const int32_t code = code_of<Signed, Round>(code_units<Asymmetric>(task.w[i], p), p);
    static_cast<Container*>(task.codes)[i] = static_cast<Container>(pattern_of(code, p));
  });
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
  const QuantizeTask task{w, n, channels, ranges, f, codes};
  quantize_many_cuda(&task, 1, stream);
}

void quantize_many_cuda(const QuantizeTask* tasks, int64_t count, void* stream) {
  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  for (int64_t t = 0; t < count; ++t) {
    check_quant_kernel_args("quantize_many_cuda", tasks[t].n, tasks[t].channels, tasks[t].format);
  }
  auto kernel_of = [](const QuantizeTask& t) {
    return 8 * t.format.is_signed + 4 * t.format.asymmetric + 2 * t.format.round + (t.format.bits > 8);
  };
  launch_element_batches(tasks, count, "quantize_many_cuda", kernel_of,
                         [&](const ElementBatch<QuantizeTask>& batch, unsigned grid) {
    dispatch_quant_format(batch.tasks[0].format, [&](auto is_signed, auto asymmetric, auto round, auto* container) {
      using Container = std::remove_pointer_t<decltype(container)>;
      const auto kernel = quantize_many_kernel<decltype(is_signed)::value, decltype(asymmetric)::value,
                                               decltype(round)::value, Container>;
      BR_LAUNCH(kernel, grid, kThreads, 0, cuda_stream)(batch);
    });
  });
  check_launch("quantize_many_cuda");
}

void dequantize_cuda(const void* codes, int64_t n, int64_t channels, const QuantRange* ranges,
                     QuantFormat f, float* out, void* stream) {
  check_quant_kernel_args("dequantize_cuda", n, channels, f);
  const DequantizeTask task{codes, n, channels, ranges, f, out};
  dequantize_many_cuda(&task, 1, stream);
}

void dequantize_many_cuda(const DequantizeTask* tasks, int64_t count, void* stream) {
  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  for (int64_t t = 0; t < count; ++t) {
    check_quant_kernel_args("dequantize_many_cuda", tasks[t].n, tasks[t].channels, tasks[t].format);
  }
  // One instantiation per sign, symmetry and container; rounding does not enter dequantization.
  auto kernel_of = [](const DequantizeTask& t) {
    return 4 * t.format.is_signed + 2 * t.format.asymmetric + (t.format.bits > 8);
  };
  launch_element_batches(tasks, count, "dequantize_many_cuda", kernel_of,
                         [&](const ElementBatch<DequantizeTask>& batch, unsigned grid) {
    QuantFormat f = batch.tasks[0].format;
    f.round = false;
    dispatch_quant_format(f, [&](auto is_signed, auto asymmetric, auto, auto* container) {
      using Container = std::remove_pointer_t<decltype(container)>;
      const auto kernel = dequantize_many_kernel<decltype(is_signed)::value, decltype(asymmetric)::value, Container>;
      BR_LAUNCH(kernel, grid, kThreads, 0, cuda_stream)(batch);
    });
  });
  check_launch("dequantize_many_cuda");
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
    const auto kernel =
        quantize_dequantize_kernel<decltype(is_signed)::value, decltype(asymmetric)::value, decltype(round)::value>;
    BR_LAUNCH(kernel, blocks_for(n), kThreads, 0, cuda_stream)(w, n, channels, per_channel, ranges, format, out);
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

/// Reduces the block's (lo, hi) keys and merges them into keys[0], keys[1] by atomics. Every thread
/// of the block must call it (it synchronises).
__device__ void merge_keys_into(int32_t lo, int32_t hi, int32_t* keys) {
  __shared__ int32_t block_min[kThreads / 32], block_max[kThreads / 32];
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
    atomicMin(&keys[0], lo);
    atomicMax(&keys[1], hi);
  }
  __syncthreads();
}

/// Folds one element into a thread's (lo, hi) keys; a non-finite element pins lo to kNonFiniteKey.
__device__ __forceinline__ void add_key(float x, int32_t& lo, int32_t& hi) {
  if (!isfinite(x)) {
    lo = kNonFiniteKey;
    return;
  }
  const int32_t k = order_key(x);
  lo = k < lo ? k : lo;
  hi = k > hi ? k : hi;
}

// grid.y: channels (strided), grid.x: slices of one channel's elements.
__global__ void channel_minmax_kernel(const float* __restrict__ w, int64_t channels, int64_t per_channel,
                                      int32_t* keys) {
  for (int64_t c = blockIdx.y; c < channels; c += gridDim.y) {
    const float* base = w + c * per_channel;
    int32_t lo = INT32_MAX, hi = INT32_MIN;
    for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < per_channel; i += int64_t{gridDim.x} * kThreads) {
      add_key(base[i], lo, hi);
    }
    merge_keys_into(lo, hi, keys + 2 * c);
  }
}

/// Turns the (min, max) keys stored in a range entry into the range, in place.
__device__ __forceinline__ void range_from_keys(QuantRange* range, const RangeRule& rule) {
  const int32_t* keys = reinterpret_cast<const int32_t*>(range);
  const int32_t lo = keys[0], hi = keys[1];
  if (lo == kNonFiniteKey) {
    *range = QuantRange{__int_as_float(0x7FC00000), __int_as_float(0x7FC00000)};
  } else {
    *range = range_of_channel(key_value(lo), key_value(hi), rule);
  }
}

__global__ void ranges_from_keys_kernel(QuantRange* ranges, int64_t channels, RangeRule rule) {
  for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < channels; c += int64_t{gridDim.x} * blockDim.x) {
    range_from_keys(ranges + c, rule);
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
  BR_LAUNCH(init_range_keys_kernel, small_grid, kThreads, 0, cuda_stream)(keys, channels);
  // About 16 elements per thread, at most 512 slices per channel and 65535 channels per launch row.
  const int64_t slices = std::min<int64_t>((per_channel + kThreads * 16 - 1) / (kThreads * 16), 512);
  const dim3 grid(static_cast<unsigned>(slices), static_cast<unsigned>(std::min<int64_t>(channels, 65535)));
  BR_LAUNCH(channel_minmax_kernel, grid, kThreads, 0, cuda_stream)(w, channels, per_channel, keys);
  BR_LAUNCH(ranges_from_keys_kernel, small_grid, kThreads, 0, cuda_stream)(ranges, channels, rule);
  check_launch("compute_ranges_cuda");
}

namespace {

// Multi-tensor quantization-aware training (NOTE [Device ranges] for the keys). Per batch of
// tasks of one format: keys initialised, min/max keys (and the master copy) in one pass over the
// weights, keys turned into ranges, then the fake quantization: four launches for up to
// kMaxFakeQuantizeTasks tensors, where one tensor at a time takes five.
constexpr int kMaxFakeQuantizeTasks = 32;
constexpr int64_t kSliceElements = int64_t{kThreads} * 16;  // min/max pass: elements per block

struct FakeQuantizeBatch {
  FakeQuantizeTask tasks[kMaxFakeQuantizeTasks];
  int64_t range_begin[kMaxFakeQuantizeTasks + 1];   // each task's first channel in the batch's ranges
  int64_t slices[kMaxFakeQuantizeTasks];            // min/max blocks per channel
  int64_t minmax_begin[kMaxFakeQuantizeTasks + 1];  // prefix sums of channels * slices
  int64_t element_begin[kMaxFakeQuantizeTasks + 1]; // prefix sums of element blocks
  int count;
};
static_assert(sizeof(FakeQuantizeBatch) < 4000, "kernel parameters are limited to 4 KiB");

__global__ void minmax_many_kernel(__grid_constant__ const FakeQuantizeBatch batch, QuantRange* ranges) {
  const int64_t block = blockIdx.x;
  const int t = task_of_block(batch.minmax_begin, batch.count, block);
  const FakeQuantizeTask& task = batch.tasks[t];
  const int64_t local = block - batch.minmax_begin[t];
  const int64_t channel = local / batch.slices[t], slice = local % batch.slices[t];
  const int64_t per_channel = task.n / task.channels;
  const int64_t begin = channel * per_channel + slice * kSliceElements;
  const int64_t end = channel * per_channel + min(per_channel, (slice + 1) * kSliceElements);
  int32_t lo = INT32_MAX, hi = INT32_MIN;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const float x = task.w[i];
    if (task.master != nullptr) task.master[i] = x;
    add_key(x, lo, hi);
  }
  merge_keys_into(lo, hi, reinterpret_cast<int32_t*>(ranges + batch.range_begin[t] + channel));
}

__global__ void ranges_from_keys_many_kernel(__grid_constant__ const FakeQuantizeBatch batch, QuantRange* ranges) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= batch.range_begin[batch.count]) return;
  const int t = task_of_block(batch.range_begin, batch.count, c);
  if (batch.tasks[t].n == 0) {  // no weights: as the host, the range of min = max = 0
    ranges[c] = range_of_channel(0.0f, 0.0f, batch.tasks[t].rule);
  } else {
    range_from_keys(ranges + c, batch.tasks[t].rule);
  }
}

// No __restrict__: out may be w.
template <bool Signed, bool Asymmetric, bool Round>
__global__ void fake_quantize_many_kernel(__grid_constant__ const FakeQuantizeBatch batch, const QuantRange* ranges) {
  for_block_elements(batch.tasks, batch.element_begin, batch.count, [&](const FakeQuantizeTask& task, int t, int64_t i) {
    const QuantParams p = make_quant_params(ranges[batch.range_begin[t] + channel_of_element(task, i)], task.format);
    const int32_t code = code_of<Signed, Round>(code_units<Asymmetric>(task.w[i], p), p);
    task.out[i] = dequantize_value<Asymmetric>(value_of_code<Signed>(code, p), p);
  });
}

constexpr int kMaxCopyClampTasks = 80;

// No __restrict__: src may be dst. Comparisons as in copy_clamped_segment: NaN stays NaN, bit for
// bit (no arithmetic touches a value that is only copied, clamped or made +0).
__global__ void copy_clamped_many_kernel(__grid_constant__ const ElementBatch<CopyClampTask, kMaxCopyClampTasks> batch) {
  for_block_elements(batch.tasks, batch.block_begin, batch.count, [](const CopyClampTask& task, int, int64_t i) {
    const float v = task.src[i], bound = task.bound;
    const float x = task.positive_zero && v == 0.0f ? 0.0f : v;
    const float clamped = bound > 0.0f ? (x < -bound ? -bound : (x > bound ? bound : x)) : x;
    task.dst[i] = task.average_with != nullptr ? (clamped + task.average_with[i]) * 0.5f : clamped;
  });
}

}  // namespace

void fake_quantize_many_cuda(const FakeQuantizeTask* tasks, int64_t count, QuantRange* ranges, void* stream) {
  static_assert(sizeof(QuantRange) == 2 * sizeof(int32_t), "keys live in the ranges buffer");
  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  for (int64_t t = 0; t < count; ++t) {
    check_quant_kernel_args("fake_quantize_many_cuda", tasks[t].n, tasks[t].channels, tasks[t].format);
  }
  auto kernel_of = [](const FakeQuantizeTask& t) {
    return 4 * t.format.is_signed + 2 * t.format.asymmetric + t.format.round;
  };
  in_batches(tasks, count, kMaxFakeQuantizeTasks, kernel_of, [&](int64_t first, int64_t size) {
    FakeQuantizeBatch batch{};
    batch.count = static_cast<int>(size);
    for (int i = 0; i < batch.count; ++i) {
      const FakeQuantizeTask& task = tasks[first + i];
      const int64_t per_channel = task.n / task.channels;
      batch.tasks[i] = task;
      batch.range_begin[i + 1] = batch.range_begin[i] + task.channels;
      batch.slices[i] = std::max<int64_t>(1, (per_channel + kSliceElements - 1) / kSliceElements);
      batch.minmax_begin[i + 1] = batch.minmax_begin[i] + (task.n > 0 ? task.channels * batch.slices[i] : 0);
      batch.element_begin[i + 1] = batch.element_begin[i] + (task.n + kElementBlock - 1) / kElementBlock;
    }
    QuantRange* batch_ranges = ranges;
    ranges += batch.range_begin[batch.count];
    const int64_t channels = batch.range_begin[batch.count];
    if (channels == 0) return;
    const unsigned channel_grid = checked_grid((channels + kThreads - 1) / kThreads, "fake_quantize_many_cuda");
    BR_LAUNCH(init_range_keys_kernel, channel_grid, kThreads, 0, cuda_stream)(
        reinterpret_cast<int32_t*>(batch_ranges), channels);
    if (batch.minmax_begin[batch.count] > 0) {
      BR_LAUNCH(minmax_many_kernel, checked_grid(batch.minmax_begin[batch.count], "fake_quantize_many_cuda"), kThreads,
                0, cuda_stream)(batch, batch_ranges);
    }
    BR_LAUNCH(ranges_from_keys_many_kernel, channel_grid, kThreads, 0, cuda_stream)(batch, batch_ranges);
    const int64_t blocks = batch.element_begin[batch.count];
    if (blocks == 0) return;
    QuantFormat f = batch.tasks[0].format;
    f.bits = 8;  // the container does not enter the fused path: instantiate on the flags only
    dispatch_quant_format(f, [&](auto is_signed, auto asymmetric, auto round, auto*) {
      const auto kernel =
          fake_quantize_many_kernel<decltype(is_signed)::value, decltype(asymmetric)::value, decltype(round)::value>;
      BR_LAUNCH(kernel, checked_grid(blocks, "fake_quantize_many_cuda"), kThreads, 0, cuda_stream)(batch, batch_ranges);
    });
  });
  check_launch("fake_quantize_many_cuda");
}

void copy_clamped_many_cuda(const CopyClampTask* tasks, int64_t count, void* stream) {
  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  for (int64_t t = 0; t < count; ++t) {
    BR_CHECK(tasks[t].n >= 0, "copy_clamped_many_cuda: negative element count ", tasks[t].n);
  }
  launch_element_batches<kMaxCopyClampTasks>(
      tasks, count, "copy_clamped_many_cuda", [](const CopyClampTask&) { return 0; },
      [&](const ElementBatch<CopyClampTask, kMaxCopyClampTasks>& batch, unsigned grid) {
        BR_LAUNCH(copy_clamped_many_kernel, grid, kThreads, 0, cuda_stream)(batch);
      });
  check_launch("copy_clamped_many_cuda");
}

}  // namespace bitrobust::kernels
