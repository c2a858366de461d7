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

// ---- Channels last (NOTE [Channels-last GroupNorm]) ----
//
// A sample is S pixels of C values. Each pass runs over runs of pixels with the channels in the
// vector lanes; a run is a few KB (kRunFloats), staged as floats where the float kernel would stage
// them (an input bias, bf16 input), so that the vector loops see whole runs, not one pixel per
// call: with 16 channels a pixel is one vector, and calls per pixel cost more than the pixel.

constexpr int64_t kRunFloats = 4096;

BR_VECTOR_CLONES void add_channels(const float* __restrict__ x, int64_t pixels, int64_t channels,
                                   double* __restrict__ sum) {
  for (int64_t p = 0; p < pixels; ++p) {
    const float* row = x + p * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) sum[c] += static_cast<double>(row[c]);
  }
}

BR_VECTOR_CLONES void add_channel_deviations(const float* __restrict__ x, int64_t pixels, int64_t channels,
                                             const double* __restrict__ mean, double* __restrict__ sum,
                                             double* __restrict__ sum_sq) {
  for (int64_t p = 0; p < pixels; ++p) {
    const float* row = x + p * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      const double d = static_cast<double>(row[c]) - mean[c];
      sum[c] += d;
      sum_sq[c] += d * d;
    }
  }
}

/// Per channel of a sample, what normalize_relu_run takes per channel: the group's mean pair,
/// rstd * scale and the bias.
struct ChannelAffine {
  float* mean_hi;
  float* mean_lo;
  float* a;
  float* b;
};

BR_VECTOR_CLONES void normalize_relu_pixels(const float* __restrict__ x, int64_t pixels, int64_t channels,
                                            const float* __restrict__ hi, const float* __restrict__ lo,
                                            const float* __restrict__ a, const float* __restrict__ b,
                                            float* __restrict__ y) {
  for (int64_t p = 0; p < pixels; ++p) {
    const float* row = x + p * channels;
    float* out = y + p * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) out[c] = relu(((row[c] - hi[c]) - lo[c]) * a[c] + b[c]);
  }
}

// One output row of the pooling: the input rows top and bottom (2 * out_width pixels used), each
// 2x2 window normalized and pooled by the rule of NOTE [2x2 max pooling], in the order
// max_pool2x2_plane takes its elements.
BR_VECTOR_CLONES void normalize_relu_pool_row(const float* __restrict__ top, const float* __restrict__ bottom,
                                              int64_t out_width, int64_t channels, const float* __restrict__ hi,
                                              const float* __restrict__ lo, const float* __restrict__ a,
                                              const float* __restrict__ b, float* __restrict__ y) {
  for (int64_t j = 0; j < out_width; ++j) {
    const float* p00 = top + 2 * j * channels;
    const float* p01 = p00 + channels;
    const float* p10 = bottom + 2 * j * channels;
    const float* p11 = p10 + channels;
    float* out = y + j * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      const float v00 = relu(((p00[c] - hi[c]) - lo[c]) * a[c] + b[c]);
      const float v01 = relu(((p01[c] - hi[c]) - lo[c]) * a[c] + b[c]);
      const float v10 = relu(((p10[c] - hi[c]) - lo[c]) * a[c] + b[c]);
      const float v11 = relu(((p11[c] - hi[c]) - lo[c]) * a[c] + b[c]);
      out[c] = pool_take(pool_take(v00, v01), pool_take(v10, v11));
    }
  }
}

BR_VECTOR_CLONES void add_channel_constants(const float* __restrict__ x, int64_t pixels, int64_t channels,
                                            const float* __restrict__ b, float* __restrict__ y) {
  for (int64_t p = 0; p < pixels; ++p) {
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) y[p * channels + c] = x[p * channels + c] + b[c];
  }
}

BR_VECTOR_CLONES void widen_add_channels(const uint16_t* __restrict__ x, int64_t pixels, int64_t channels,
                                         const float* __restrict__ b, float* __restrict__ y) {
  for (int64_t p = 0; p < pixels; ++p) {
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) y[p * channels + c] = bf16_to_float(x[p * channels + c]) + b[c];
  }
}

/// The values the float kernel normalizes for `pixels` pixels: x itself (float input without an
/// input bias), or staged into `buffer`: widened, plus the input bias (the float additions that
/// add_constant and widen_add_run form).
inline const float* pixel_values(const float* x, int64_t pixels, int64_t channels, const float* input_bias,
                                 float* buffer) {
  if (input_bias == nullptr) return x;
  add_channel_constants(x, pixels, channels, input_bias, buffer);
  return buffer;
}
inline const float* pixel_values(const uint16_t* x, int64_t pixels, int64_t channels, const float* input_bias,
                                 float* buffer) {
  if (input_bias == nullptr) {
    widen_run(x, pixels * channels, buffer);
  } else {
    widen_add_channels(x, pixels, channels, input_bias, buffer);
  }
  return buffer;
}

/// Where float outputs go: into the output (float), or into `buffer`, narrowed into the output by
/// store_values (bf16).
inline float* output_values(float* target, float*) { return target; }
inline float* output_values(uint16_t*, float* buffer) { return buffer; }
inline void store_values(const float*, int64_t, float*) {}
inline void store_values(const float* out, int64_t count, uint16_t* target) { narrow_run(out, count, target); }

/// Per-thread scratch of the channels-last kernel: per channel four double and four float
/// statistics; a staged input run (or two staged rows when pooling) and a run of float outputs.
struct ChannelsLastScratch {
  double *sum, *mean, *dev_sum, *dev_sum_sq;
  ChannelAffine affine;
  float* staged;  ///< pixels_per_run * C floats, and at least 2 * width * C when pooling
  float* out;     ///< pixels_per_run * C floats, or (width / 2) * C when pooling
  int64_t pixels_per_run;
};

// One sample (n): its statistics, then its outputs (pooled when pool_height > 0).
template <typename T>
void channels_last_sample(const T* x, const GroupNormShape& shape, const float* scale, const float* bias,
                          const float* input_bias, double eps, T* y, int64_t pool_height, int64_t pool_width,
                          const ChannelsLastScratch& s) {
  const int64_t channels = shape.channels, spatial = shape.spatial, run = s.pixels_per_run;
  const int64_t per_group = channels / shape.groups;
  const double count = static_cast<double>(per_group * spatial);
  std::fill(s.sum, s.sum + channels, 0.0);
  for (int64_t p = 0; p < spatial; p += run) {
    const int64_t pixels = std::min(run, spatial - p);
    add_channels(pixel_values(x + p * channels, pixels, channels, input_bias, s.staged), pixels, channels, s.sum);
  }
  for (int64_t g = 0; g < shape.groups; ++g) {
    double total = 0.0;
    for (int64_t c = g * per_group; c < (g + 1) * per_group; ++c) total += s.sum[c];
    std::fill(s.mean + g * per_group, s.mean + (g + 1) * per_group, total / count);
  }
  std::fill(s.dev_sum, s.dev_sum + channels, 0.0);
  std::fill(s.dev_sum_sq, s.dev_sum_sq + channels, 0.0);
  for (int64_t p = 0; p < spatial; p += run) {
    const int64_t pixels = std::min(run, spatial - p);
    add_channel_deviations(pixel_values(x + p * channels, pixels, channels, input_bias, s.staged), pixels, channels,
                           s.mean, s.dev_sum, s.dev_sum_sq);
  }
  for (int64_t g = 0; g < shape.groups; ++g) {
    double dev_sum = 0.0, dev_sum_sq = 0.0;
    for (int64_t c = g * per_group; c < (g + 1) * per_group; ++c) {
      dev_sum += s.dev_sum[c];
      dev_sum_sq += s.dev_sum_sq[c];
    }
    // As group_norm_relu_group: the corrected two-pass statistics and the float mean pair.
    const double correction = dev_sum / count;
    const double mean = s.mean[g * per_group] + correction;
    const double variance = std::max(0.0, dev_sum_sq / count - correction * correction);
    const float rstd = static_cast<float>(1.0 / std::sqrt(variance + eps));
    const float mean_hi = static_cast<float>(mean);
    const float mean_lo = static_cast<float>(mean - static_cast<double>(mean_hi));
    for (int64_t c = g * per_group; c < (g + 1) * per_group; ++c) {
      s.affine.mean_hi[c] = mean_hi;
      s.affine.mean_lo[c] = mean_lo;
      s.affine.a[c] = rstd * scale[c];
      s.affine.b[c] = bias[c];
    }
  }
  const ChannelAffine& f = s.affine;
  if (pool_height == 0) {
    for (int64_t p = 0; p < spatial; p += run) {
      const int64_t pixels = std::min(run, spatial - p);
      float* out = output_values(y + p * channels, s.out);
      normalize_relu_pixels(pixel_values(x + p * channels, pixels, channels, input_bias, s.staged), pixels, channels,
                            f.mean_hi, f.mean_lo, f.a, f.b, out);
      store_values(out, pixels * channels, y + p * channels);
    }
    return;
  }
  const int64_t out_height = pool_height / 2, out_width = pool_width / 2, row = pool_width * channels;
  for (int64_t i = 0; i < out_height; ++i) {
    // The two rows a window row reads, staged together (they follow each other in x).
    const float* rows = pixel_values(x + 2 * i * row, 2 * pool_width, channels, input_bias, s.staged);
    T* target = y + i * out_width * channels;
    float* out = output_values(target, s.out);
    normalize_relu_pool_row(rows, rows + row, out_width, channels, f.mean_hi, f.mean_lo, f.a, f.b, out);
    store_values(out, out_width * channels, target);
  }
}

// The channels-last forms of run_groups: OpenMP over the samples, each computed by one thread in a
// fixed order (results do not depend on the number of threads).
template <typename T>
void run_samples_channels_last(const T* x, const GroupNormShape& shape, const float* scale, const float* bias,
                               const float* input_bias, double eps, T* y, int64_t pool_height, int64_t pool_width) {
  const int64_t sample = shape.channels * shape.spatial;
  if (shape.batch == 0 || sample == 0) return;
  const bool pooled = pool_height > 0;
  const int64_t out_sample = pooled ? shape.channels * (pool_height / 2) * (pool_width / 2) : sample;
  const bool parallel = shape.numel() >= kParallelMin;
  const int threads = parallel ? static_cast<int>(std::min<int64_t>(omp_get_max_threads(), shape.batch)) : 1;
  // Allocated here, not in the parallel region (see run_groups).
  const int64_t channels = shape.channels;
  const int64_t pixels_per_run = std::max<int64_t>(1, kRunFloats / channels);
  // (Pooling stages runs for the statistics, and two rows for the outputs.)
  const int64_t staged = std::max(pixels_per_run, pooled ? 2 * pool_width : 0) * channels;
  const int64_t out = pooled ? (pool_width / 2) * channels : pixels_per_run * channels;
  const size_t double_stride = thread_buffer_stride<double>(static_cast<size_t>(4 * channels));
  const size_t float_stride = thread_buffer_stride<float>(static_cast<size_t>(4 * channels + staged + out));
  std::vector<double> doubles(double_stride * threads);
  std::vector<float> floats(float_stride * threads);
#pragma omp parallel if (parallel) num_threads(threads)
  {
    double* d = doubles.data() + double_stride * omp_get_thread_num();
    float* f = floats.data() + float_stride * omp_get_thread_num();
    const int64_t c = channels;
    const ChannelsLastScratch scratch{d,          d + c,     d + 2 * c, d + 3 * c, {f, f + c, f + 2 * c, f + 3 * c},
                                      f + 4 * c, f + 4 * c + staged, pixels_per_run};
#pragma omp for schedule(static)
    for (int64_t n = 0; n < shape.batch; ++n) {
      channels_last_sample(x + n * sample, shape, scale, bias, input_bias, eps, y + n * out_sample, pool_height,
                           pool_width, scratch);
    }
  }
}

// Channels first or last, as the shape says. (With one value per channel, S = 1, the two layouts
// are the same memory.)
template <typename T>
void run(const T* x, const GroupNormShape& shape, const float* scale, const float* bias, const float* input_bias,
         double eps, T* y, int64_t pool_height, int64_t pool_width) {
  if (shape.channels_last && shape.spatial > 1) {
    run_samples_channels_last(x, shape, scale, bias, input_bias, eps, y, pool_height, pool_width);
  } else {
    run_groups(x, shape, scale, bias, input_bias, eps, y, pool_height, pool_width);
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
  run(x, shape, scale, bias, input_bias, eps, y, 0, 0);
}

void group_norm_relu_max_pool2x2_cpu(const float* x, const GroupNormShape& shape, int64_t height, int64_t width,
                                     const float* scale, const float* bias, const float* input_bias, double eps,
                                     float* y) {
  check_group_norm_shape("group_norm_relu_max_pool2x2_cpu", shape, eps);
  check_pool_planes("group_norm_relu_max_pool2x2_cpu", shape, height, width);
  run(x, shape, scale, bias, input_bias, eps, y, height, width);
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
  run(x, shape, scale, bias, input_bias, eps, y, 0, 0);
}

void group_norm_relu_max_pool2x2_bf16_cpu(const uint16_t* x, const GroupNormShape& shape, int64_t height,
                                          int64_t width, const float* scale, const float* bias,
                                          const float* input_bias, double eps, uint16_t* y) {
  check_group_norm_shape("group_norm_relu_max_pool2x2_bf16_cpu", shape, eps);
  check_pool_planes("group_norm_relu_max_pool2x2_bf16_cpu", shape, height, width);
  run(x, shape, scale, bias, input_bias, eps, y, height, width);
}

}  // namespace bitrobust::kernels
