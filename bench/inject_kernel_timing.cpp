// Torch-free timing of inject_bit_errors_cpu on SimpleNet's 5,498,378 uint8 codes, so that the
// kernel file of two revisions can be built and compared in one run
// (scripts/bench_sampler_revisions.sh). Usage: inject_kernel_timing [threads [rate ...]]
// (rates default to 1e-4 1e-3 1e-2 1e-1). With INCREMENTAL=1 in the environment it times what a CPU
// sweep runs instead, inject_dequantize_incremental_cpu into float weights (one tensor, one channel,
// 8-bit offset binary; dense above its switching rate), each pattern undoing the one before.
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "bitrobust/bits/bit_errors_kernels.h"

int main(int argc, char** argv) {
  using bitrobust::bits::InjectTask;
  const int64_t n = 5498378;
  omp_set_num_threads(argc > 1 ? std::atoi(argv[1]) : 1);
  std::vector<uint8_t> clean(n), out(n);
  std::mt19937_64 rng(1);
  for (auto& c : clean) c = static_cast<uint8_t>(rng());
  std::vector<double> rates = {1e-4, 1e-3, 1e-2, 1e-1};
  if (argc > 2) rates.clear();
  for (int i = 2; i < argc; ++i) rates.push_back(std::atof(argv[i]));
  const char* incremental_env = std::getenv("INCREMENTAL");
  const bool incremental = incremental_env != nullptr && std::string(incremental_env) == "1";
  std::vector<float> weights(n, 0.0f);
  const bitrobust::kernels::QuantRange range{-0.1f, 0.1f};
  bitrobust::kernels::QuantFormat format;  // 8 bits, offset binary, symmetric
  const bitrobust::kernels::DequantizeTask clean_weights{clean.data(), n, 1, &range, format, weights.data()};
  for (double p : rates) {
    // What an empty incremental state stands for: out == clean, and the weights clean's.
    out = clean;
    bitrobust::kernels::dequantize_many_cpu(&clean_weights, 1);
    InjectTask task;
    task.clean = clean.data();
    task.out = out.data();
    task.numel = n;
    task.elem_bytes = 1;
    task.params = bitrobust::bits::make_bit_error_params(0, 8, p, p);
    const int reps = p >= 0.1 ? 5 : (p >= 0.01 ? 30 : (incremental ? 400 : 100));
    bitrobust::bits::InjectDequantizeTask with_weights;
    with_weights.inject = task;
    with_weights.weights = weights.data();
    with_weights.ranges = &range;
    with_weights.format = format;
    bitrobust::bits::IncrementalInjectState state;
    const auto one_pattern = [&](uint64_t seed) {
      return incremental ? bitrobust::bits::inject_dequantize_incremental_cpu(&with_weights, 1, seed, state)
                         : bitrobust::bits::inject_bit_errors_cpu(&task, 1, seed);
    };
    uint64_t seed = 100;
    one_pattern(seed++);  // warm-up (and, incremental, a pattern to undo)
    long long flips = 0;
    const auto start = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r) flips += one_pattern(seed++);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() / reps;
    std::printf("p=%-7g %8.3f ms/pattern %7.3f GB/s  flips/pattern %lld\n", p, ms, n / ms / 1e6, flips / reps);
  }
  return 0;
}
