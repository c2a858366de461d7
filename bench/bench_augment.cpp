// Batch assembly (gather + augment + normalize) of 128 CIFAR-10-shaped images, per augmentation:
//   0 none (gather + normalize), 1 crop + flip + Cutout, 2 the reference's pipeline (+ AutoAugment).
// On CUDA when a GPU is present (the data live on the device, as `train` keeps them), else the CPU.
//   ./build/bench_augment   (OMP_NUM_THREADS sets the CPU threads)
#include <ATen/ATen.h>
#include <benchmark/benchmark.h>
#include <torch/cuda.h>

#include "bitrobust/data/dataset.h"

namespace {

using namespace bitrobust;

constexpr int64_t kImages = 4096;
constexpr int64_t kBatch = 128;

data::Dataset& cifar_shaped() {
  static data::Dataset d = [] {
    data::Dataset set;
    const at::Device device = torch::cuda::is_available() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
    at::manual_seed(1);
    set.images = at::randint(0, 256, {kImages, 3, 32, 32}, at::kByte).to(device);
    set.labels = at::zeros({kImages}, at::kLong).to(device);
    set.num_classes = 10;
    set.name = "cifar10";
    set.split = "train";
    return set;
  }();
  return d;
}

void BM_MakeBatch(benchmark::State& state) {
  const data::Dataset& set = cifar_shaped();
  const data::Normalization norm = data::normalization_for("cifar10");
  data::AugmentOptions augment = data::default_augmentation("cifar10");
  if (state.range(0) == 1) augment.autoaugment = false;
  const data::AugmentOptions* options = state.range(0) == 0 ? nullptr : &augment;
  state.SetLabel(options == nullptr ? "none" : augment.describe());
  const at::Tensor order = at::randperm(kImages, at::kLong).to(set.images.device());
  int64_t step = 0;
  for (auto _ : state) {
    const int64_t begin = (step * kBatch) % kImages;
    at::Tensor batch = data::make_batch(set, order.slice(0, begin, begin + kBatch), norm, options, 7, step);
    if (batch.is_cuda()) torch::cuda::synchronize();
    benchmark::DoNotOptimize(batch.data_ptr());
    ++step;
  }
  state.counters["images_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations() * kBatch), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_MakeBatch)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond)->UseRealTime()->MinTime(1.0);

}  // namespace

BENCHMARK_MAIN();
