#pragma once
// main() of the Google Benchmark programs that time LibTorch CPU ops: two threads unless
// OMP_NUM_THREADS says otherwise (the project's 2-core machine), and freed memory kept in the
// process as the CLI keeps it (bitrobust/common/malloc_tuning.h), and OpenBLAS's kernels chosen as
// the CLI chooses them (NOTE [OpenBLAS core]).
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>

#include "bitrobust/common/cpu_description.h"
#include "bitrobust/common/malloc_tuning.h"

#define BITROBUST_CPU_BENCHMARK_MAIN()                                   \
  int main(int argc, char** argv) {                                      \
    bitrobust::choose_openblas_core();                                   \
    const char* threads = std::getenv("OMP_NUM_THREADS");                \
    at::set_num_threads(threads ? std::max(1, std::atoi(threads)) : 2);  \
    bitrobust::keep_freed_memory_in_process();                           \
    benchmark::Initialize(&argc, argv);                                  \
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;    \
    benchmark::RunSpecifiedBenchmarks();                                 \
    benchmark::Shutdown();                                               \
    return 0;                                                            \
  }
