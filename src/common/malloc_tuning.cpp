#include "bitrobust/common/malloc_tuning.h"

#include <cstdlib>  // defines __GLIBC__ where the C library is glibc

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace bitrobust {

bool keep_freed_memory_in_process() {
#if defined(__GLIBC__)
  // Every block comes from the heap: no mmap threshold (glibc accepts at most 32 MiB, and evaluation
  // batches make larger activations: LeNet's first at batch 500 is 50 MB) but no mmap at all. A
  // trim threshold far above any working set stops the heap top being returned. (The threshold is
  // still set: it switches off glibc's dynamic threshold, should mmap be allowed again.)
  constexpr int kMmapThreshold = 32 << 20;
  constexpr int kTrimThreshold = 1 << 30;
  bool ok = mallopt(M_MMAP_THRESHOLD, kMmapThreshold) == 1;
  ok = mallopt(M_MMAP_MAX, 0) == 1 && ok;
  return mallopt(M_TRIM_THRESHOLD, kTrimThreshold) == 1 && ok;
#else
  return false;
#endif
}

}  // namespace bitrobust
