#include "bitrobust/common/runtime.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <omp.h>
#include <pthread.h>

#include <csignal>

#include <algorithm>
#include <thread>

#include "bitrobust/common/error.h"
#include "bitrobust/common/flush_denormals.h"
#include "bitrobust/common/malloc_tuning.h"

namespace bitrobust {

int max_cpu_threads() {
  return 4 * std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

void configure_cpu_runtime(int threads) {
  // Far more threads than cores only makes OpenMP's spinning workers fight over the cores: a few
  // thousand on two cores run for minutes where two take seconds.
  BR_CHECK(threads <= max_cpu_threads(), "--threads ", threads, " is more than 4 per core on this machine (",
           std::thread::hardware_concurrency(), " cores; at most ", max_cpu_threads(), ")");
  if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  at::set_num_threads(std::max(1, threads));
  keep_freed_memory_in_process();
  at::globalContext().setFlushDenormal(true);
  kernels::flush_denormals_on_all_threads();
  block_termination_signals_on_worker_threads();
}

void block_termination_signals_on_worker_threads() {
  // The output code holds SIGINT, SIGTERM and SIGHUP back on the main thread while it makes and
  // registers a temporary file (src/report/output.cpp); the kernel hands a signal the main thread
  // holds back to any thread that does not, so the OpenMP workers must hold them back always: they
  // are then handled on the main thread, once it lets them through (found by a review).
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, sig);
#pragma omp parallel
  {
    if (omp_get_thread_num() != 0) ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
  }
}

}  // namespace bitrobust
