#pragma once
// Process-wide CPU settings every entry point wants (the CLI's commands, the benchmarks).

namespace bitrobust {
/// Sets LibTorch's intra-op threads (`threads` <= 0: one per core), keeps freed memory in the process
/// (malloc_tuning.h) and flushes denormal floats on every thread (flush_denormals.h). Throws
/// bitrobust::Error for more than max_cpu_threads().
void configure_cpu_runtime(int threads);
/// 4 per core: the most threads configure_cpu_runtime accepts.
int max_cpu_threads();
}  // namespace bitrobust
