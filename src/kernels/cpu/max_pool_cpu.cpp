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

#include <vector>

#include "bitrobust/common/error.h"
#include "bitrobust/models/max_pool_kernels.h"

namespace bitrobust::kernels {
namespace {

// Below this many input elements one thread finishes in tens of microseconds, about what a
// fork/join costs when the cores are shared (as for group_norm_relu_cpu).
constexpr int64_t kParallelMin = int64_t{1} << 16;

// ATen's rule: a later element replaces the maximum when greater, or when it is NaN.
inline float take(float max_so_far, float value) {
  return (value > max_so_far || value != value) ? value : max_so_far;
}

// pairs[t] = take(x[2t], x[2t + 1]) for t < count.
void pool_pairs(const float* __restrict__ x, int64_t count, float* __restrict__ pairs) {
#pragma omp simd
  for (int64_t t = 0; t < count; ++t) pairs[t] = take(x[2 * t], x[2 * t + 1]);
}

// y[j] = take(top[j], bottom[j]) for j < count.
void pool_rows(const float* __restrict__ top, const float* __restrict__ bottom, int64_t count, float* __restrict__ y) {
#pragma omp simd
  for (int64_t j = 0; j < count; ++j) y[j] = take(top[j], bottom[j]);
}

}  // namespace

void max_pool2x2_cpu(const float* x, int64_t planes, int64_t height, int64_t width, float* y) {
  BR_CHECK(planes >= 0 && height >= 0 && width >= 0, "max_pool2x2_cpu: sizes must be >= 0, got ", planes,
           " planes of ", height, " x ", width);
  const int64_t out_height = height / 2, out_width = width / 2;
  if (planes == 0 || out_height == 0 || out_width == 0) return;
  const int64_t pairs_per_plane = 2 * out_height * out_width;  // the rows pooled (an odd last one is not)
  // Each thread's buffer of pairs, allocated here: an allocation failing inside the parallel region
  // would end the process (std::terminate) instead of throwing.
  const bool parallel = planes * height * width >= kParallelMin;
  const int threads = parallel ? omp_get_max_threads() : 1;
  std::vector<float> buffers(static_cast<size_t>(pairs_per_plane) * threads);
#pragma omp parallel if (parallel)
  {
    float* pairs = buffers.data() + static_cast<size_t>(pairs_per_plane) * omp_get_thread_num();
#pragma omp for schedule(static)
    for (int64_t p = 0; p < planes; ++p) {
      const float* plane = x + p * height * width;
      if (width % 2 == 0) {
        pool_pairs(plane, pairs_per_plane, pairs);  // the rows follow each other without a gap
      } else {
        for (int64_t r = 0; r < 2 * out_height; ++r) pool_pairs(plane + r * width, out_width, pairs + r * out_width);
      }
      float* out = y + p * out_height * out_width;
      for (int64_t i = 0; i < out_height; ++i) {
        pool_rows(pairs + 2 * i * out_width, pairs + (2 * i + 1) * out_width, out_width, out + i * out_width);
      }
    }
  }
}

}  // namespace bitrobust::kernels
