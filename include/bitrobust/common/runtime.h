#pragma once
// Process-wide CPU settings every entry point wants (the CLI's commands, the benchmarks).

namespace bitrobust {
/// Sets LibTorch's intra-op threads (`threads` <= 0: one per core), keeps freed memory in the process
/// (malloc_tuning.h) and flushes denormal floats on every thread (flush_denormals.h). (OpenBLAS's
/// kernels are chosen earlier, first thing in main: choose_openblas_core, cpu_description.h.) Throws
/// bitrobust::Error for more than max_cpu_threads().
void configure_cpu_runtime(int threads);
/// Holds SIGINT, SIGTERM and SIGHUP back on every OpenMP worker thread but the calling one, so that
/// they are always handled on the main thread (configure_cpu_runtime calls it).
void block_termination_signals_on_worker_threads();
/// 4 per core: the most threads configure_cpu_runtime accepts.
int max_cpu_threads();
}  // namespace bitrobust
