// CPU kernel of the fused GroupNorm + ReLU, see NOTE [Fused GroupNorm + ReLU] in
// bitrobust/models/group_norm_relu_kernels.h. OpenMP over the N*G groups. A group is one contiguous
// block (a few KB for our networks), so its three passes (sum, squared deviations, normalize and
// write) read it from DRAM once and then from the core's cache; the fused write saves eager ReLU's
// extra read and write of the whole tensor.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include <omp.h>

#include "bitrobust/common/bfloat16.h"
#include "bitrobust/models/group_norm_relu_kernels.h"
#include "bitrobust/models/max_pool_kernels.h"
#include "kernels/cpu/thread_buffers.h"

namespace bitrobust::kernels {
namespace {

// Below this many elements one thread finishes in tens of microseconds, about what a fork/join
// costs when the cores are shared; only larger tensors fork. LeNet's smallest GroupNorm input at
// batch 500 ([500, 256], the linear layer) has 128K elements and forks.
constexpr int64_t kParallelMin = int64_t{1} << 16;

// See NOTE [CPU multiversioning] in src/kernels/cpu/quantize_cpu.cpp: the loops are also compiled
// for AVX2 and picked at load time. The double accumulations need the wider lanes most.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define BR_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define BR_VECTOR_CLONES
#endif

// Sums in double: a group of 2048 floats near 1000 keeps its mean to about 1e-13, where float
// accumulation would lose several digits.
BR_VECTOR_CLONES double sum_of(const float* __restrict__ x, int64_t count) {
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < count; ++i) sum += static_cast<double>(x[i]);
  return sum;
}

struct Deviations {
  double sum;     ///< Σ (x - m): the rounding error of m, times the count
  double sum_sq;  ///< Σ (x - m)²
};

BR_VECTOR_CLONES Deviations deviations_from(const float* __restrict__ x, int64_t count, double m) {
  double sum = 0.0, sum_sq = 0.0;
#pragma omp simd reduction(+ : sum, sum_sq)
  for (int64_t i = 0; i < count; ++i) {
    const double d = static_cast<double>(x[i]) - m;
    sum += d;
    sum_sq += d * d;
  }
  return {sum, sum_sq};
}

// `v < 0 ? 0 : v` rather than std::max: NaN passes through, as at::relu lets it.
inline float relu(float v) { return v < 0.0f ? 0.0f : v; }

/// One channel's S values: y = relu(((x - hi) - lo) * a + b).
BR_VECTOR_CLONES void normalize_relu_run(const float* __restrict__ x, int64_t count, float mean_hi,
                                         float mean_lo, float a, float b, float* __restrict__ y) {
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) y[i] = relu(((x[i] - mean_hi) - mean_lo) * a + b);
}

/// S = 1 (the [N, C] input of linear layers): one value per channel, so the loop runs over channels.
BR_VECTOR_CLONES void normalize_relu_channels(const float* __restrict__ x, int64_t count,
                                              float mean_hi, float mean_lo, float rstd,
                                              const float* __restrict__ scale,
                                              const float* __restrict__ bias, float* __restrict__ y) {
#pragma omp simd
  for (int64_t c = 0; c < count; ++c) {
    y[c] = relu(((x[c] - mean_hi) - mean_lo) * (rstd * scale[c]) + bias[c]);
  }
}

BR_VECTOR_CLONES void add_constant(const float* __restrict__ x, int64_t count, float b, float* __restrict__ y) {
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) y[i] = x[i] + b;
}

/// Where a group's channels go when they are pooled (group_norm_relu_max_pool2x2_cpu): each
/// channel, normalized into `normalized` (spatial floats), is pooled into its quarter of y.
struct PoolAfter {
  int64_t height, width;
  float* normalized;
  float* pairs;  ///< max_pool2x2_plane's buffer
};

/// One group (n, g): `channels` consecutive channels of `spatial` values each; scale and bias point
/// at the group's first channel. pool: nullptr, or how to pool each channel into y instead.
void group_norm_relu_group(const float* x, int64_t channels, int64_t spatial, const float* scale,
                           const float* bias, double eps, float* y, const PoolAfter* pool) {
  const int64_t count = channels * spatial;
  const double first_mean = sum_of(x, count) / static_cast<double>(count);
  // Corrected two-pass: the deviations' sum is the rounding error left in the first mean; taking it
  // out of the sum of squares keeps the variance exact to rounding even for large offsets.
  const Deviations dev = deviations_from(x, count, first_mean);
  const double correction = dev.sum / static_cast<double>(count);
  const double mean = first_mean + correction;
  const double variance = std::max(0.0, dev.sum_sq / static_cast<double>(count) - correction * correction);
  const float rstd = static_cast<float>(1.0 / std::sqrt(variance + eps));
  // The mean as a float pair: x - mean_hi is exact for x near the mean, so a deviation is rounded
  // once (a single float mean near 1000 would be off by up to 3e-5 in every deviation).
  const float mean_hi = static_cast<float>(mean);
  const float mean_lo = static_cast<float>(mean - static_cast<double>(mean_hi));
  if (spatial == 1) {
    normalize_relu_channels(x, channels, mean_hi, mean_lo, rstd, scale, bias, y);
    return;
  }
  for (int64_t c = 0; c < channels; ++c) {
    float* out = pool != nullptr ? pool->normalized : y + c * spatial;
    normalize_relu_run(x + c * spatial, spatial, mean_hi, mean_lo, rstd * scale[c], bias[c], out);
    if (pool != nullptr) {
      const int64_t pooled = (pool->height / 2) * (pool->width / 2);
      max_pool2x2_plane(out, pool->height, pool->width, pool->pairs, y + c * pooled);
    }
  }
}

// bf16 in and out: a channel's values widened to floats (exactly), plus the input bias if any (the
// float sums the float kernel forms), and the float results narrowed once.
BR_VECTOR_CLONES void widen_run(const uint16_t* __restrict__ x, int64_t count, float* __restrict__ y) {
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) y[i] = bf16_to_float(x[i]);
}

BR_VECTOR_CLONES void widen_add_run(const uint16_t* __restrict__ x, int64_t count, float b, float* __restrict__ y) {
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) y[i] = bf16_to_float(x[i]) + b;
}

BR_VECTOR_CLONES void narrow_run(const float* __restrict__ x, int64_t count, uint16_t* __restrict__ y) {
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) y[i] = float_to_bf16(x[i]);
}

// group_norm_relu_cpu, or with pool_height > 0 group_norm_relu_max_pool2x2_cpu (the group's output
// a quarter of its input then); T = uint16_t: their bf16 forms, each group widened into a buffer,
// computed as the float kernel computes it, and narrowed.
template <typename T>
void run_groups(const T* x, const GroupNormShape& shape, const float* scale, const float* bias,
                const float* input_bias, double eps, T* y, int64_t pool_height, int64_t pool_width) {
  constexpr bool bf16 = std::is_same_v<T, uint16_t>;
  const int64_t group_count = shape.batch * shape.groups;
  const int64_t group_size = shape.group_size();
  if (group_count == 0 || group_size == 0) return;
  const int64_t channels_per_group = shape.channels / shape.groups;
  const bool pooled = pool_height > 0;
  const int64_t out_group_size = pooled ? channels_per_group * (pool_height / 2) * (pool_width / 2) : group_size;
  // With an input bias (or bf16 input) a group is first formed as x + input_bias (the float sums
  // the CUDA twin forms as it reads), a pooled channel is normalized before it is pooled, and a
  // bf16 group's float output is formed before it is narrowed, in buffers of the thread's own,
  // allocated here: an allocation failing inside the parallel region would end the process
  // (std::terminate) instead of throwing.
  const bool parallel = shape.numel() >= kParallelMin;
  const int threads = parallel ? omp_get_max_threads() : 1;
  const size_t staged = input_bias != nullptr || bf16 ? static_cast<size_t>(group_size) : 0;
  const size_t pool_buffers = pooled ? static_cast<size_t>(shape.spatial) * 2 : 0;
  const size_t out_buffer = bf16 ? static_cast<size_t>(out_group_size) : 0;
  const size_t per_thread = thread_buffer_stride<float>(staged + pool_buffers + out_buffer);
  std::vector<float> buffers(per_thread * threads);
#pragma omp parallel if (parallel)
  {
    float* mine = buffers.data() + per_thread * omp_get_thread_num();
    float* biased = staged > 0 ? mine : nullptr;
    PoolAfter pool{pool_height, pool_width, nullptr, nullptr};
    if (pooled) {
      pool.normalized = mine + staged;
      pool.pairs = pool.normalized + shape.spatial;  // 2 * (H/2) * (W/2) <= spatial floats
    }
    float* narrowed_from = mine + staged + pool_buffers;
#pragma omp for schedule(static)
    for (int64_t ng = 0; ng < group_count; ++ng) {
      const int64_t first_channel = (ng % shape.groups) * channels_per_group;
      const T* xg = x + ng * group_size;
      const float* group = nullptr;
      if constexpr (bf16) {
        if (input_bias == nullptr) {
          widen_run(xg, group_size, biased);  // the group's values are one run
        } else {
          for (int64_t c = 0; c < channels_per_group; ++c) {
            widen_add_run(xg + c * shape.spatial, shape.spatial, input_bias[first_channel + c], biased + c * shape.spatial);
          }
        }
        group = biased;
      } else if (input_bias != nullptr) {
        for (int64_t c = 0; c < channels_per_group; ++c) {
          add_constant(xg + c * shape.spatial, shape.spatial, input_bias[first_channel + c],
                       biased + c * shape.spatial);
        }
        group = biased;
      } else {
        group = xg;
      }
      float* out = nullptr;
      if constexpr (bf16) {
        out = narrowed_from;
      } else {
        out = y + ng * out_group_size;
      }
      group_norm_relu_group(group, channels_per_group, shape.spatial, scale + first_channel, bias + first_channel,
                            eps, out, pooled ? &pool : nullptr);
      if constexpr (bf16) narrow_run(out, out_group_size, y + ng * out_group_size);
    }
  }
}

void check_pool_planes(const char* what, const GroupNormShape& shape, int64_t height, int64_t width) {
  BR_CHECK(height >= 2 && width >= 2 && shape.spatial == height * width, what, ": planes of ", height, " x ", width,
           " must be at least 2 x 2 and hold the ", shape.spatial, " values a channel has");
}

}  // namespace

void group_norm_relu_cpu(const float* x, const GroupNormShape& shape, const float* scale,
                         const float* bias, const float* input_bias, double eps, float* y) {
  check_group_norm_shape("group_norm_relu_cpu", shape, eps);
  run_groups(x, shape, scale, bias, input_bias, eps, y, 0, 0);
}

void group_norm_relu_max_pool2x2_cpu(const float* x, const GroupNormShape& shape, int64_t height, int64_t width,
                                     const float* scale, const float* bias, const float* input_bias, double eps,
                                     float* y) {
  check_group_norm_shape("group_norm_relu_max_pool2x2_cpu", shape, eps);
  check_pool_planes("group_norm_relu_max_pool2x2_cpu", shape, height, width);
  run_groups(x, shape, scale, bias, input_bias, eps, y, height, width);
}

void group_norm_relu_bf16_cpu(const uint16_t* x, const GroupNormShape& shape, const float* scale,
                              const float* bias, const float* input_bias, double eps, uint16_t* y) {
  check_group_norm_shape("group_norm_relu_bf16_cpu", shape, eps);
  if (shape.spatial == 1 && shape.numel() > 0) {
    // [N, C] (linear layers): groups of a few values, for which widening and narrowing group by
    // group cost more than the group itself (2.7x the float kernel's time on [500, 256], 8 values
    // a group); the whole tensor is widened, computed and narrowed in three passes instead.
    std::vector<float> wide(static_cast<size_t>(shape.numel())), out(wide.size());
    widen_run(x, shape.numel(), wide.data());
    run_groups(wide.data(), shape, scale, bias, input_bias, eps, out.data(), 0, 0);
    narrow_run(out.data(), shape.numel(), y);
    return;
  }
  run_groups(x, shape, scale, bias, input_bias, eps, y, 0, 0);
}

void group_norm_relu_max_pool2x2_bf16_cpu(const uint16_t* x, const GroupNormShape& shape, int64_t height,
                                          int64_t width, const float* scale, const float* bias,
                                          const float* input_bias, double eps, uint16_t* y) {
  check_group_norm_shape("group_norm_relu_max_pool2x2_bf16_cpu", shape, eps);
  check_pool_planes("group_norm_relu_max_pool2x2_bf16_cpu", shape, height, width);
  run_groups(x, shape, scale, bias, input_bias, eps, y, height, width);
}

}  // namespace bitrobust::kernels
