// Denormal floats are flushed per thread (MXCSR on x86): at::globalContext().setFlushDenormal only
// reaches the calling thread, while LibTorch's CPU kernels run on the OpenMP pool's threads.
#include "bitrobust/common/flush_denormals.h"

#include <omp.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace bitrobust::kernels {

void flush_denormals_on_all_threads() {
#if defined(__x86_64__) || defined(__i386__)
  constexpr unsigned kFlushToZero = 0x8000, kDenormalsAreZero = 0x0040;
  _mm_setcsr(_mm_getcsr() | kFlushToZero | kDenormalsAreZero);
#pragma omp parallel
  { _mm_setcsr(_mm_getcsr() | kFlushToZero | kDenormalsAreZero); }
#endif
}

}  // namespace bitrobust::kernels
