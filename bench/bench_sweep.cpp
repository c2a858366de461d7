// The bit error sweep against plain inference of the same model on the same data (issue 5's goal:
// sweep throughput >= 90% of plain inference). Both report images per second: plain inference
// counts test images, the sweep counts test images x patterns. LeNet (GroupNorm, 8-bit rquant,
// random weights: timing does not depend on them) on 2000 Fashion-MNIST-sized images, batch 500.
// Run interleaved so the shared machine's noise hits both alike:
//   build/bench_sweep --benchmark_repetitions=3 --benchmark_enable_random_interleaving=true
// Results and the command are recorded in docs/measurements.md.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <thread>

#include "bitrobust/common/flush_denormals.h"
#include "bitrobust/common/malloc_tuning.h"
#include "bitrobust/common/philox.h"
#include "bitrobust/eval/bit_error_eval.h"
#include "bitrobust/eval/evaluate.h"
#include "bitrobust/models/models.h"
#include "bitrobust/quant/model_quantization.h"

namespace {

using namespace bitrobust;

constexpr int64_t kImages = 2000;
constexpr int64_t kBatch = 500;

struct Setup {
  std::shared_ptr<models::Classifier> net;
  quant::QuantizedModel q;
  data::Dataset test;
};

Setup& setup() {
  static Setup s = [] {
    keep_freed_memory_in_process();
    at::set_num_threads(static_cast<int>(std::thread::hardware_concurrency()));
    at::globalContext().setFlushDenormal(true);
    kernels::flush_denormals_on_all_threads();
    at::manual_seed(1);
    Setup r;
    models::ModelSpec spec;  // LeNet, GroupNorm, 28x28x1, 10 classes
    r.net = models::build_model(spec);
    r.q = quant::quantize_model(*r.net, quant::QuantScheme::preset("rquant", 8));
    r.test.images = at::randint(0, 256, {kImages, 1, 28, 28}, at::kByte);
    r.test.labels = at::randint(0, 10, {kImages}, at::kLong);
    r.test.num_classes = 10;
    r.test.name = "fashion-mnist";
    r.test.split = "test";
    r.test.source = "random";
    return r;
  }();
  return s;
}

void BM_PlainInference(benchmark::State& state) {
  Setup& s = setup();
  s.q.load_clean_weights();
  for (auto _ : state) {
    const eval::EvalResult r = eval::evaluate(*s.net, s.test, kBatch);
    benchmark::DoNotOptimize(r.error);
  }
  state.counters["images_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * kImages, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_PlainInference)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);

// One sweep with one rate and `range(0)` patterns: the clean pass the protocol needs, then a
// pattern per seed (draw, inject, dequantize, evaluate, RErr). Counted: images x patterns only, so
// the clean pass counts against the sweep, as it does in `bitrobust eval`.
void BM_Sweep(benchmark::State& state) {
  Setup& s = setup();
  eval::SweepOptions options;
  options.rates = {0.01};
  options.patterns = state.range(0);
  options.batch_size = kBatch;
  options.progress = false;
  int64_t patterns = 0;
  for (auto _ : state) {
    const eval::SweepResult r = eval::run_sweep(*s.net, s.q, s.test, options);
    benchmark::DoNotOptimize(r.results.front().rerr_mean);
    patterns += options.patterns;
  }
  state.counters["images_patterns_per_second"] =
      benchmark::Counter(static_cast<double>(patterns) * kImages, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Sweep)->Arg(20)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

}  // namespace

BENCHMARK_MAIN();
