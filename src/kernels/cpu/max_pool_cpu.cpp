// CPU kernel of the 2x2 max pooling, see NOTE [2x2 max pooling] in bitrobust/models/max_pool_kernels.h.
//
// A plane is pooled in two passes through a buffer of the thread's own: each pair of neighbours in
// a row, then each pair of rows. Taking the four elements as max(max(a, b), max(c, d)) gives the
// same bits as one after the other (a, b, c, d): without NaN both keep the first of the greatest
// values, and with NaN both keep the last NaN. The networks' rows are short (2 to 16 outputs), too
// short for the vector units one row at a time, while the first pass runs over the whole plane as
// one loop when the width is even. On LeNet's shapes at batch 500 and 128-channel 4 x 4 planes (one
// thread, 2026-12-05), the two passes took 0.6-0.86x the time of one pass over each output row, and
// the same loops compiled for AVX2 took 1.5-3.7x the time of the baseline (SSE2) build, for AVX-512
// 2.5-3.7x (with so few outputs a row, wider vectors spend their time in remainder loops and
// shuffles), so no copies for wider vectors are made.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "bitrobust/common/bfloat16.h"
#include "bitrobust/common/error.h"
#include "bitrobust/models/max_pool_kernels.h"
#include "kernels/cpu/thread_buffers.h"

namespace bitrobust::kernels {
namespace {

// Below this many input elements one thread finishes in tens of microseconds, about what a
// fork/join costs when the cores are shared (as for group_norm_relu_cpu).
constexpr int64_t kParallelMin = int64_t{1} << 16;

// Elements are compared as floats: bf16 ones (uint16_t) widened, exactly, so the element kept is
// the one the float rule keeps, and it is kept as it is.
inline float value_of(float v) { return v; }
inline float value_of(uint16_t v) { return bf16_to_float(v); }

// ATen's rule: a later element replaces the maximum when greater, or when it is NaN.
template <typename T>
inline T take(T max_so_far, T value) {
  const float v = value_of(value);
  return (v > value_of(max_so_far) || v != v) ? value : max_so_far;
}

// pairs[t] = take(x[2t], x[2t + 1]) for t < count.
template <typename T>
void pool_pairs(const T* __restrict__ x, int64_t count, T* __restrict__ pairs) {
#pragma omp simd
  for (int64_t t = 0; t < count; ++t) pairs[t] = take(x[2 * t], x[2 * t + 1]);
}

// y[j] = take(top[j], bottom[j]) for j < count.
template <typename T>
void pool_rows(const T* __restrict__ top, const T* __restrict__ bottom, int64_t count, T* __restrict__ y) {
#pragma omp simd
  for (int64_t j = 0; j < count; ++j) y[j] = take(top[j], bottom[j]);
}

// One plane (see max_pool2x2_plane).
template <typename T>
void pool_plane(const T* x, int64_t height, int64_t width, T* pairs, T* y) {
  const int64_t out_height = height / 2, out_width = width / 2;
  if (width % 2 == 0) {
    pool_pairs(x, 2 * out_height * out_width, pairs);  // the rows follow each other without a gap
  } else {
    for (int64_t r = 0; r < 2 * out_height; ++r) pool_pairs(x + r * width, out_width, pairs + r * out_width);
  }
  for (int64_t i = 0; i < out_height; ++i) {
    pool_rows(pairs + 2 * i * out_width, pairs + (2 * i + 1) * out_width, out_width, y + i * out_width);
  }
}

// The same, noting which of the two each result is (1: the second).
void pool_pairs(const float* __restrict__ x, int64_t count, float* __restrict__ pairs, uint8_t* __restrict__ second) {
#pragma omp simd
  for (int64_t t = 0; t < count; ++t) {
    const float a = x[2 * t], b = x[2 * t + 1];
    const bool later = b > a || b != b;
    pairs[t] = later ? b : a;
    second[t] = later;
  }
}

// The same, and each result's position in its window from the pairs' (second_top, second_bottom).
void pool_rows(const float* __restrict__ top, const float* __restrict__ bottom, const uint8_t* __restrict__ second_top,
               const uint8_t* __restrict__ second_bottom, int64_t count, float* __restrict__ y,
               uint8_t* __restrict__ positions) {
#pragma omp simd
  for (int64_t j = 0; j < count; ++j) {
    const bool lower = bottom[j] > top[j] || bottom[j] != bottom[j];
    y[j] = lower ? bottom[j] : top[j];
    positions[j] = static_cast<uint8_t>(lower ? 2 + second_bottom[j] : second_top[j]);
  }
}

// Calls pool_plane(p, pairs, second) for every plane p, in parallel for large inputs, with
// buffers of the thread's own for a plane's pairs (pairs_per_plane elements and bytes).
template <typename T = float, typename PoolPlane>
void for_each_plane(int64_t planes, int64_t plane_size, int64_t pairs_per_plane, PoolPlane pool_plane) {
  // Allocated here: an allocation failing inside the parallel region would end the process
  // (std::terminate) instead of throwing.
  const bool parallel = planes * plane_size >= kParallelMin;
  const int threads = parallel ? static_cast<int>(std::min<int64_t>(omp_get_max_threads(), planes)) : 1;
  const size_t pair_stride = thread_buffer_stride<T>(static_cast<size_t>(pairs_per_plane));
  const size_t second_stride = thread_buffer_stride<uint8_t>(static_cast<size_t>(pairs_per_plane));
  std::vector<T> pair_buffers(pair_stride * threads);
  std::vector<uint8_t> second_buffers(second_stride * threads);
#pragma omp parallel if (parallel) num_threads(threads)
  {
    const size_t thread = static_cast<size_t>(omp_get_thread_num());
#pragma omp for schedule(static)
    for (int64_t p = 0; p < planes; ++p) {
      pool_plane(p, pair_buffers.data() + pair_stride * thread, second_buffers.data() + second_stride * thread);
    }
  }
}

void check_sizes(const char* what, int64_t planes, int64_t height, int64_t width) {
  BR_CHECK(planes >= 0 && height >= 0 && width >= 0, what, ": sizes must be >= 0, got ", planes, " planes of ",
           height, " x ", width);
}

}  // namespace

void max_pool2x2_plane(const float* x, int64_t height, int64_t width, float* pairs, float* y) {
  pool_plane(x, height, width, pairs, y);
}

namespace {

template <typename T>
void pool_planes(const char* what, const T* x, int64_t planes, int64_t height, int64_t width, T* y) {
  check_sizes(what, planes, height, width);
  const int64_t out_height = height / 2, out_width = width / 2;
  if (planes == 0 || out_height == 0 || out_width == 0) return;
  const int64_t pairs_per_plane = 2 * out_height * out_width;  // the rows pooled (an odd last one is not)
  for_each_plane<T>(planes, height * width, pairs_per_plane, [&](int64_t p, T* pairs, uint8_t*) {
    pool_plane(x + p * height * width, height, width, pairs, y + p * out_height * out_width);
  });
}

// One output pixel's channels, channels last: the windows' four pixels a, b (top row), c, d.
template <typename T>
void pool_pixels(const T* __restrict__ a, const T* __restrict__ b, const T* __restrict__ c, const T* __restrict__ d,
                 int64_t channels, T* __restrict__ y) {
#pragma omp simd
  for (int64_t k = 0; k < channels; ++k) y[k] = take(take(a[k], b[k]), take(c[k], d[k]));
}

// Channels last, a pixel's channels side by side: the vector lanes run over the channels, so the
// short rows that pool_plane works around do not arise.
template <typename T>
void pool_channels_last(const char* what, const T* x, int64_t batch, int64_t channels, int64_t height,
                        int64_t width, T* y) {
  BR_CHECK(batch >= 0 && channels >= 0 && height >= 0 && width >= 0, what, ": sizes must be >= 0, got batch ",
           batch, ", ", channels, " channels of ", height, " x ", width);
  const int64_t out_height = height / 2, out_width = width / 2;
  if (batch == 0 || channels == 0 || out_height == 0 || out_width == 0) return;
  const int64_t rows = batch * out_height;
#pragma omp parallel for schedule(static) if (batch * channels * height * width >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t n = r / out_height, i = r % out_height;
    const T* top = x + (n * height + 2 * i) * width * channels;
    const T* bottom = top + width * channels;
    T* out = y + r * out_width * channels;
    for (int64_t j = 0; j < out_width; ++j) {
      const int64_t left = 2 * j * channels, right = left + channels;
      pool_pixels(top + left, top + right, bottom + left, bottom + right, channels, out + j * channels);
    }
  }
}

}  // namespace

void max_pool2x2_channels_last_cpu(const float* x, int64_t batch, int64_t channels, int64_t height, int64_t width,
                                   float* y) {
  pool_channels_last("max_pool2x2_channels_last_cpu", x, batch, channels, height, width, y);
}

void max_pool2x2_channels_last_bf16_cpu(const uint16_t* x, int64_t batch, int64_t channels, int64_t height,
                                        int64_t width, uint16_t* y) {
  pool_channels_last("max_pool2x2_channels_last_bf16_cpu", x, batch, channels, height, width, y);
}

void max_pool2x2_cpu(const float* x, int64_t planes, int64_t height, int64_t width, float* y) {
  pool_planes("max_pool2x2_cpu", x, planes, height, width, y);
}

void max_pool2x2_bf16_cpu(const uint16_t* x, int64_t planes, int64_t height, int64_t width, uint16_t* y) {
  pool_planes("max_pool2x2_bf16_cpu", x, planes, height, width, y);
}

void max_pool2x2_with_positions_cpu(const float* x, int64_t planes, int64_t height, int64_t width, float* y,
                                    uint8_t* positions) {
  check_sizes("max_pool2x2_with_positions_cpu", planes, height, width);
  const int64_t out_height = height / 2, out_width = width / 2;
  if (planes == 0 || out_height == 0 || out_width == 0) return;
  const int64_t pairs_per_plane = 2 * out_height * out_width;
  for_each_plane(planes, height * width, pairs_per_plane, [&](int64_t p, float* pairs, uint8_t* second) {
    const float* plane = x + p * height * width;
    if (width % 2 == 0) {
      pool_pairs(plane, pairs_per_plane, pairs, second);
    } else {
      for (int64_t r = 0; r < 2 * out_height; ++r) {
        pool_pairs(plane + r * width, out_width, pairs + r * out_width, second + r * out_width);
      }
    }
    const int64_t first_out = p * out_height * out_width;
    for (int64_t i = 0; i < out_height; ++i) {
      const int64_t top = 2 * i * out_width, bottom = (2 * i + 1) * out_width;
      pool_rows(pairs + top, pairs + bottom, second + top, second + bottom, out_width,
                y + first_out + i * out_width, positions + first_out + i * out_width);
    }
  });
}

void max_pool2x2_backward_cpu(const float* grad_y, const uint8_t* positions, int64_t planes, int64_t height,
                              int64_t width, float* grad_x) {
  check_sizes("max_pool2x2_backward_cpu", planes, height, width);
  const int64_t out_height = height / 2, out_width = width / 2;
  const int64_t plane_size = height * width;
#pragma omp parallel for schedule(static) if (planes * plane_size >= kParallelMin)
  for (int64_t p = 0; p < planes; ++p) {
    float* plane = grad_x + p * plane_size;
    if (height % 2 != 0 || width % 2 != 0) {
      for (int64_t e = 0; e < plane_size; ++e) plane[e] = 0.0f;  // what no window covers
    }
    for (int64_t i = 0; i < out_height; ++i) {
      const float* g = grad_y + (p * out_height + i) * out_width;
      const uint8_t* where = positions + (p * out_height + i) * out_width;
      float* top = plane + 2 * i * width;
      float* bottom = top + width;
#pragma omp simd
      for (int64_t j = 0; j < out_width; ++j) {
        // ATen adds the gradient to a zeroed input gradient: 0 + g, so -0 becomes +0.
        const float v = 0.0f + g[j];
        top[2 * j] = where[j] == 0 ? v : 0.0f;
        top[2 * j + 1] = where[j] == 1 ? v : 0.0f;
        bottom[2 * j] = where[j] == 2 ? v : 0.0f;
        bottom[2 * j + 1] = where[j] == 3 ? v : 0.0f;
      }
    }
  }
}

}  // namespace bitrobust::kernels
