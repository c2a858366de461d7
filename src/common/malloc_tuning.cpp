#include "bitrobust/common/malloc_tuning.h"

#include <cstdlib>  // defines __GLIBC__ where the C library is glibc

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace bitrobust {

bool keep_freed_memory_in_process() {
#if defined(__GLIBC__)
  // 32 MiB is the largest mmap threshold glibc accepts on 64-bit systems; blocks below it come
  // from the heap. A trim threshold far above any working set stops the heap top being returned.
  constexpr int kMmapThreshold = 32 << 20;
  constexpr int kTrimThreshold = 1 << 30;
  const bool ok = mallopt(M_MMAP_THRESHOLD, kMmapThreshold) == 1;
  return mallopt(M_TRIM_THRESHOLD, kTrimThreshold) == 1 && ok;
#else
  return false;
#endif
}

}  // namespace bitrobust
