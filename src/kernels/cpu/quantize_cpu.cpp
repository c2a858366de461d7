// CPU fixed-point quantization kernels: OpenMP over blocks of elements, one instantiation per
// format (no per-element branch on the scheme), inner loops vectorized. Formulas: NOTE
// [Quantization formulas] in bitrobust/quant/quantize_math.h.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "bitrobust/quant/quantize_kernels.h"
#include "bitrobust/quant/quantize_math.h"

namespace bitrobust::kernels {
namespace {

// Large enough that a thread's share dwarfs OpenMP's fork cost, small enough to balance 1M floats.
constexpr int64_t kBlock = 16384;
// Below this many elements one thread finishes in tens of microseconds (a LeNet layer, most
// biases), less than a fork/join costs when the cores are shared; only larger tensors fork.
constexpr int64_t kParallelMin = int64_t{1} << 18;

/// Calls segment(channel, begin, end) over [begin, end) split at channel boundaries.
template <typename Segment>
void split_at_channels(int64_t begin, int64_t end, int64_t per_channel, Segment&& segment) {
  while (begin < end) {
    const int64_t channel = begin / per_channel;
    const int64_t segment_end = std::min(end, (channel + 1) * per_channel);
    segment(channel, begin, segment_end);
    begin = segment_end;
  }
}

/// Calls segment(channel, begin, end) over [0, n) split at channel boundaries, blocks in parallel.
template <typename Segment>
void for_each_segment(int64_t n, int64_t channels, Segment&& segment) {
  if (n == 0) return;
  const int64_t per_channel = n / channels;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t b = 0; b < blocks; ++b) {
    split_at_channels(b * kBlock, std::min(n, (b + 1) * kBlock), per_channel, segment);
  }
}

/// Calls work(task, begin, end) for blocks of kBlock elements of every task (tasks have a field n),
/// all blocks of all tasks in one parallel region: a model's small tensors need no fork each.
template <typename Task, typename Work>
void for_each_block_of_tasks(const Task* tasks, int64_t count, Work&& work) {
  struct Block {
    int64_t task, begin, end;
  };
  std::vector<Block> blocks;
  int64_t total = 0;
  for (int64_t t = 0; t < count; ++t) {
    for (int64_t begin = 0; begin < tasks[t].n; begin += kBlock) {
      blocks.push_back({t, begin, std::min(tasks[t].n, begin + kBlock)});
    }
    total += tasks[t].n;
  }
  const int64_t num_blocks = static_cast<int64_t>(blocks.size());
#pragma omp parallel for schedule(static) if (total >= kParallelMin)
  for (int64_t b = 0; b < num_blocks; ++b) work(tasks[blocks[b].task], blocks[b].begin, blocks[b].end);
}

// Hides the parameters' values from the optimizer. Once it knows them (say the ±1 bounds of the
// asymmetric scheme), GCC threads jumps through the clamps into per-case control flow and gives up
// vectorizing; parameters it cannot see stay in registers and the clamps become minps/maxps.
inline void opaque(QuantParams& p) {
#if defined(__GNUC__)
  asm volatile("" : "+m"(p));
#endif
}

// NOTE [CPU multiversioning]: the library is built for baseline x86-64 (SSE2). The inner loops are
// also compiled for AVX2 and picked at load time (GCC ifunc): twice the lanes for the divisions
// that bound the asymmetric formats. Results are identical, since every operation is an IEEE
// operation or an exact conversion whatever the vector width, and nothing is contracted.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define BR_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define BR_VECTOR_CLONES
#endif

// The per-segment loops: plain functions over restrict pointers so every instantiation vectorizes.
template <bool Signed, bool Asymmetric, bool Round, typename Container>
BR_VECTOR_CLONES void quantize_segment(const float* __restrict__ w, int64_t count, QuantParams p,
                      Container* __restrict__ codes) {
  opaque(p);
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) {
    const int32_t code = code_of<Signed, Round>(code_units<Asymmetric>(w[i], p), p);
    codes[i] = static_cast<Container>(pattern_of(code, p));
  }
}

template <bool Signed, bool Asymmetric, typename Container>
BR_VECTOR_CLONES void dequantize_segment(const Container* __restrict__ codes, int64_t count, QuantParams p,
                        float* __restrict__ out) {
  opaque(p);
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) {
    out[i] = dequantize_value<Asymmetric>(value_of_pattern<Signed>(codes[i], p), p);
  }
}

// No __restrict__: out may be w (in-place fake quantization); each element is read, then written.
template <bool Signed, bool Asymmetric, bool Round>
BR_VECTOR_CLONES void quantize_dequantize_segment(const float* w, int64_t count, QuantParams p, float* out) {
  opaque(p);
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) {
    const int32_t code = code_of<Signed, Round>(code_units<Asymmetric>(w[i], p), p);
    out[i] = dequantize_value<Asymmetric>(value_of_code<Signed>(code, p), p);
  }
}

template <bool Signed, bool Asymmetric, bool Round>
void quantize_dequantize_impl(const float* w, int64_t n, int64_t channels,
                              const QuantRange* ranges, QuantFormat f, float* out) {
  for_each_segment(n, channels, [&](int64_t channel, int64_t begin, int64_t end) {
    quantize_dequantize_segment<Signed, Asymmetric, Round>(
        w + begin, end - begin, make_quant_params(ranges[channel], f), out + begin);
  });
}

// No __restrict__: src may be dst. The comparisons are clamp's: NaN stays NaN, -0 stays -0. The
// average is an addition then a multiplication by 0.5, as at::add_ then at::mul_ compute it. -0 is
// turned into +0 by a comparison, not by adding +0.0f: a GPU's addition returns its one canonical NaN,
// the CPU's keeps the NaN's bits, and both sides must give the same bits (QuantizerCuda tests).
// (Unlike the addition, the comparison keeps a denormal input's bits where the CLI's
// denormals-are-zero mode is on; CPU training with flush-to-zero never makes denormal weights.)
BR_VECTOR_CLONES void copy_clamped_segment(const float* src, int64_t count, const CopyClampTask& task,
                                           const float* average_with, float* dst) {
  const bool positive_zero = task.positive_zero;
  const float lo = task.bound > 0.0f ? -task.bound : -std::numeric_limits<float>::infinity();
  const float hi = task.bound > 0.0f ? task.bound : std::numeric_limits<float>::infinity();
  if (average_with != nullptr) {
#pragma omp simd
    for (int64_t i = 0; i < count; ++i) {
      const float x = positive_zero && src[i] == 0.0f ? 0.0f : src[i];
      dst[i] = ((x < lo ? lo : (x > hi ? hi : x)) + average_with[i]) * 0.5f;
    }
  } else if (task.bound > 0.0f || task.positive_zero) {
#pragma omp simd
    for (int64_t i = 0; i < count; ++i) {
      const float x = positive_zero && src[i] == 0.0f ? 0.0f : src[i];
      dst[i] = x < lo ? lo : (x > hi ? hi : x);
    }
  } else if (src != dst) {
    std::memcpy(dst, src, static_cast<size_t>(count) * sizeof(float));
  }
}

struct MinMax {
  float lo, hi;
  bool finite;
};

BR_VECTOR_CLONES MinMax minmax_serial(const float* w, int64_t begin, int64_t end) {
  float lo = std::numeric_limits<float>::infinity();
  float hi = -std::numeric_limits<float>::infinity();
  int bad = 0;
#pragma omp simd reduction(min : lo) reduction(max : hi) reduction(| : bad)
  for (int64_t i = begin; i < end; ++i) {
    const float x = w[i];
    lo = std::min(lo, x);
    hi = std::max(hi, x);
    // NaN compares false and inf exceeds the largest float: both are flagged.
    bad |= !(std::fabs(x) <= std::numeric_limits<float>::max());
  }
  return {lo, hi, bad == 0};
}

}  // namespace

void quantize_cpu(const float* w, int64_t n, int64_t channels, const QuantRange* ranges,
                  QuantFormat f, void* codes) {
  check_quant_kernel_args("quantize_cpu", n, channels, f);
  const QuantizeTask task{w, n, channels, ranges, f, codes};
  quantize_many_cpu(&task, 1);
}

void quantize_many_cpu(const QuantizeTask* tasks, int64_t count) {
  for (int64_t t = 0; t < count; ++t) {
    check_quant_kernel_args("quantize_many_cpu", tasks[t].n, tasks[t].channels, tasks[t].format);
  }
  for_each_block_of_tasks(tasks, count, [](const QuantizeTask& task, int64_t block_begin, int64_t block_end) {
    dispatch_quant_format(task.format, [&](auto is_signed, auto asymmetric, auto round, auto* container) {
      using Container = std::remove_pointer_t<decltype(container)>;
      auto* codes = static_cast<Container*>(task.codes);
      split_at_channels(block_begin, block_end, task.n / task.channels, [&](int64_t channel, int64_t begin, int64_t end) {
        quantize_segment<decltype(is_signed)::value, decltype(asymmetric)::value, decltype(round)::value>(
            task.w + begin, end - begin, make_quant_params(task.ranges[channel], task.format), codes + begin);
      });
    });
  });
}

void dequantize_cpu(const void* codes, int64_t n, int64_t channels, const QuantRange* ranges,
                    QuantFormat f, float* out) {
  check_quant_kernel_args("dequantize_cpu", n, channels, f);
  const DequantizeTask task{codes, n, channels, ranges, f, out};
  dequantize_many_cpu(&task, 1);
}

void dequantize_many_cpu(const DequantizeTask* tasks, int64_t count) {
  for (int64_t t = 0; t < count; ++t) {
    check_quant_kernel_args("dequantize_many_cpu", tasks[t].n, tasks[t].channels, tasks[t].format);
  }
  for_each_block_of_tasks(tasks, count, [](const DequantizeTask& task, int64_t block_begin, int64_t block_end) {
    QuantFormat f = task.format;
    f.round = false;  // rounding does not enter dequantization: instantiate on sign and symmetry only
    dispatch_quant_format(f, [&](auto is_signed, auto asymmetric, auto, auto* container) {
      using Container = std::remove_pointer_t<decltype(container)>;
      const auto* codes = static_cast<const Container*>(task.codes);
      split_at_channels(block_begin, block_end, task.n / task.channels, [&](int64_t channel, int64_t begin, int64_t end) {
        dequantize_segment<decltype(is_signed)::value, decltype(asymmetric)::value>(
            codes + begin, end - begin, make_quant_params(task.ranges[channel], f), task.out + begin);
      });
    });
  });
}

void quantize_dequantize_cpu(const float* w, int64_t n, int64_t channels, const QuantRange* ranges,
                             QuantFormat f, float* out) {
  check_quant_kernel_args("quantize_dequantize_cpu", n, channels, f);
  // The container does not enter the fused path: instantiate on the flags only.
  const int bits = f.bits;
  f.bits = 8;
  dispatch_quant_format(f, [&](auto is_signed, auto asymmetric, auto round, auto*) {
    QuantFormat format = f;
    format.bits = bits;
    quantize_dequantize_impl<decltype(is_signed)::value, decltype(asymmetric)::value,
                             decltype(round)::value>(w, n, channels, ranges, format, out);
  });
}

int64_t fake_quantize_many_cpu(const FakeQuantizeTask* tasks, int64_t count, QuantRange* ranges) {
  for (int64_t t = 0; t < count; ++t) check_quant_kernel_args("fake_quantize_many_cpu", tasks[t].n, tasks[t].channels, tasks[t].format);
  std::vector<float> mins, maxs;
  for (int64_t t = 0; t < count; ++t) {
    const FakeQuantizeTask& task = tasks[t];
    mins.assign(task.channels, 0.0f);
    maxs.assign(task.channels, 0.0f);
    if (task.n > 0 && !minmax_cpu(task.w, task.n, task.channels, mins.data(), maxs.data())) return t;
    for (int64_t c = 0; c < task.channels; ++c) ranges[c] = range_of_channel(mins[c], maxs[c], task.rule);
    if (task.master != nullptr && task.n > 0) {
      const CopyClampTask copy{task.w, task.master, task.n, 0.0f, false, nullptr};
      copy_clamped_many_cpu(&copy, 1);
    }
    quantize_dequantize_cpu(task.w, task.n, task.channels, ranges, task.format, task.out);
    ranges += task.channels;
  }
  return -1;
}

void copy_clamped_many_cpu(const CopyClampTask* tasks, int64_t count) {
  for (int64_t t = 0; t < count; ++t) {
    BR_CHECK(tasks[t].n >= 0, "copy_clamped_many_cpu: negative element count ", tasks[t].n);
  }
  for_each_block_of_tasks(tasks, count, [](const CopyClampTask& task, int64_t begin, int64_t end) {
    copy_clamped_segment(task.src + begin, end - begin, task,
                         task.average_with != nullptr ? task.average_with + begin : nullptr, task.dst + begin);
  });
}

bool minmax_cpu(const float* w, int64_t n, int64_t channels, float* mins, float* maxs) {
  BR_CHECK(channels >= 1, "minmax_cpu: channels must be >= 1, got ", channels);
  BR_CHECK(n >= 0 && n % channels == 0, "minmax_cpu: ", n, " elements do not split into ",
           channels, " channels of equal size");
  const int64_t per_channel = n / channels;
  bool finite = true;
  if (channels == 1) {
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    float lo = std::numeric_limits<float>::infinity();
    float hi = -std::numeric_limits<float>::infinity();
#pragma omp parallel for schedule(static) if (n >= kParallelMin) reduction(min : lo) reduction(max : hi) \
    reduction(&& : finite)
    for (int64_t b = 0; b < blocks; ++b) {
      const MinMax m = minmax_serial(w, b * kBlock, std::min(n, (b + 1) * kBlock));
      lo = std::min(lo, m.lo);
      hi = std::max(hi, m.hi);
      finite = finite && m.finite;
    }
    mins[0] = lo;
    maxs[0] = hi;
  } else {
#pragma omp parallel for schedule(static) if (n >= kParallelMin) reduction(&& : finite)
    for (int64_t c = 0; c < channels; ++c) {
      const MinMax m = minmax_serial(w, c * per_channel, (c + 1) * per_channel);
      mins[c] = m.lo;
      maxs[c] = m.hi;
      finite = finite && m.finite;
    }
  }
  return finite;
}

}  // namespace bitrobust::kernels
