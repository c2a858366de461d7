#include "bitrobust/common/runtime.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <thread>

#include "bitrobust/common/flush_denormals.h"
#include "bitrobust/common/malloc_tuning.h"

namespace bitrobust {

void configure_cpu_runtime(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  at::set_num_threads(std::max(1, threads));
  keep_freed_memory_in_process();
  at::globalContext().setFlushDenormal(true);
  kernels::flush_denormals_on_all_threads();
}

}  // namespace bitrobust
