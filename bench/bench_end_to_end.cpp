// End-to-end figures of the main jobs, each next to its plain-LibTorch baseline measured in the same
// run (issue 7's table; scripts/bench_table.py, run by scripts/gpu_check.sh, prints it from this program's JSON output):
//   inference        fused GroupNorm+ReLU inference   vs eager LibTorch inference (fused path off)
//   sweep            eval::run_sweep images x patterns/s vs our own plain inference (issue 5's
//                    >= 90% goal on the CPU: --benchmark_filter='BM_Inference/1|BM_Sweep/10/'
//                    --benchmark_repetitions=3 --benchmark_enable_random_interleaving=true)
//   inject           draw + inject + dequantize a whole-model pattern vs copying the same codes
//   train            quantization-aware and RandBET steps vs a plain float step
// Model and device: SimpleNet (width 64, GroupNorm, 32x32x3) on CUDA when a GPU is present,
// LeNet (GroupNorm, 28x28x1) on the CPU; override with BITROBUST_BENCH_MODEL=simplenet|lenet.
// Data are random (timing does not depend on it) and live on the device, as `eval` keeps them.
#include <ATen/ATen.h>
#include <benchmark/benchmark.h>
#include <torch/cuda.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <chrono>
#include <cstdlib>
#include <string>

#include "bitrobust/common/cpu_description.h"
#include "bitrobust/common/runtime.h"
#include "bitrobust/eval/bit_error_eval.h"
#include "bitrobust/eval/evaluate.h"
#include "bitrobust/eval/weight_injector.h"
#include "bitrobust/models/models.h"
#include "bitrobust/quant/model_quantization.h"
#include "bitrobust/train/randbet.h"
#include "bitrobust/train/trainer.h"

namespace {

using namespace bitrobust;

constexpr int64_t kEvalBatch = 500;
constexpr int64_t kTrainBatch = 128;

struct Bench {
  at::Device device{at::kCPU};
  models::ModelSpec spec;
  data::Dataset test, train;
  std::shared_ptr<models::Classifier> net;
  quant::QuantizedModel q;
};

void sync(const at::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize();
}

data::Dataset random_dataset(const models::ModelSpec& spec, int64_t n, const std::string& name, const at::Device& device) {
  data::Dataset d;
  d.images = at::randint(0, 256, {n, spec.in_channels, spec.height, spec.width}, at::kByte).to(device);
  d.labels = at::randint(0, spec.num_classes, {n}, at::kLong).to(device);
  d.num_classes = spec.num_classes;
  d.name = name;
  d.split = "test";
  d.source = "random";
  return d;
}

Bench& bench() {
  static Bench b = [] {
    configure_cpu_runtime(0);
    Bench r;
    if (torch::cuda::is_available()) r.device = at::Device(at::kCUDA);
    const char* env = std::getenv("BITROBUST_BENCH_MODEL");
    const std::string model = env ? env : (r.device.is_cuda() ? "simplenet" : "lenet");
    r.spec.arch = model;
    r.spec.norm = "gn";
    std::string dataset = "fashion-mnist";
    if (model == "simplenet") {
      r.spec.in_channels = 3;
      r.spec.height = r.spec.width = 32;
      dataset = "cifar10";
    }
    at::manual_seed(1);
    r.net = models::build_model(r.spec);
    r.net->to(r.device);
    r.q = quant::quantize_model(*r.net, quant::QuantScheme::preset("rquant", 8));
    const int64_t n_test = r.device.is_cuda() ? 10000 : 2000;
    r.test = random_dataset(r.spec, n_test, dataset, r.device);
    r.train = random_dataset(r.spec, kTrainBatch * 60, dataset, r.device);
    r.train.split = "train";
    return r;
  }();
  return b;
}

void set_rate(benchmark::State& state, const char* name, double items) {
  state.counters[name] = benchmark::Counter(items, benchmark::Counter::kIsRate);
}

// Clean inference over the test set at `batch`, fused GroupNorm+ReLU on or off, the convolutions'
// biases added by the fused op where it is the default (models::ConvBiasFusion) or by ATen.
void time_inference(benchmark::State& state, bool fused, int64_t batch,
                    models::ConvBiasFusion bias = models::ConvBiasFusion::Cuda) {
  Bench& b = bench();
  models::set_fused_inference(fused);
  models::set_conv_bias_fusion(bias);
  b.q.load_clean_weights();
  eval::evaluate(*b.net, b.test, batch);  // warm-up (cuDNN algorithm choice for this batch)
  sync(b.device);
  for (auto _ : state) {
    const eval::EvalResult r = eval::evaluate(*b.net, b.test, batch);
    benchmark::DoNotOptimize(r.error);
  }
  sync(b.device);
  set_rate(state, "images_per_second", static_cast<double>(state.iterations()) * b.test.size());
  models::set_fused_inference(true);
  models::set_conv_bias_fusion(models::ConvBiasFusion::Cuda);
}

// arg 0: eager LibTorch (fused path off), 1: bitrobust's fused GroupNorm+ReLU inference (as
// `eval` runs it), 2: the same with the convolutions adding their own biases (ATen's extra pass on
// CUDA; the same as 1 on the CPU).
void BM_Inference(benchmark::State& state) {
  const int64_t mode = state.range(0);
  time_inference(state, mode >= 1, kEvalBatch, mode == 2 ? models::ConvBiasFusion::Never : models::ConvBiasFusion::Cuda);
}
BENCHMARK(BM_Inference)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

// Fused inference at larger batches than `eval`'s default 500: whether a GPU has room left.
void BM_InferenceBatch(benchmark::State& state) { time_inference(state, true, state.range(0)); }
BENCHMARK(BM_InferenceBatch)->Arg(1000)->Arg(2000)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(1.0);

// One rate (1%), range(0) patterns; the clean pass is timed but not counted, as in `bitrobust eval`,
// so 10 patterns can reach at most 10/11 of plain inference, and 50 (the reference's patterns per
// rate, the protocol its 10,600 images x patterns/s was measured on) 50/51. range(1): the batch
// (`eval --batch`; fused inference ran 1.07x faster at 1000 than at 500 on an H200).
void BM_Sweep(benchmark::State& state) {
  Bench& b = bench();
  eval::SweepOptions options;
  options.rates = {0.01};
  options.patterns = state.range(0);
  options.batch_size = state.range(1);
  options.progress = false;
  int64_t patterns = 0;
  {  // warm-up: lazily loaded CUDA modules, cuDNN algorithm choice, the sweep's buffers
    eval::SweepOptions one = options;
    one.patterns = 1;
    eval::run_sweep(*b.net, b.q, b.test, one);
  }
  for (auto _ : state) {
    const eval::SweepResult r = eval::run_sweep(*b.net, b.q, b.test, options);
    benchmark::DoNotOptimize(r.results.front().rerr_mean);
    patterns += options.patterns;
  }
  set_rate(state, "images_patterns_per_second", static_cast<double>(patterns) * b.test.size());
}
BENCHMARK(BM_Sweep)->Args({10, kEvalBatch})->Args({50, kEvalBatch})->Args({50, 1000})->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(2);

// Times what the sweep does per pattern over the whole model: draw and inject a pattern at `rate`
// (unless rate < 0), then dequantize every code into the weights. Bytes processed: the model's codes.
void time_inject_dequantize(benchmark::State& state, double rate) {
  Bench& b = bench();
  std::vector<bits::CodeTensor> codes = eval::perturbable_codes(b.q);
  const std::vector<quant::QuantizedTensor> perturbed = eval::with_perturbed_codes(b.q, codes);
  const bits::ErrorModel model = bits::ErrorModel::parse("random", rate < 0 ? 0.0 : rate);
  torch::NoGradGuard no_grad;
  uint64_t seed = 1000;
  for (auto _ : state) {
    if (rate >= 0) bits::inject_bit_errors_async(codes, model, seed++);
    b.q.load_weights(perturbed);
    sync(b.device);
  }
  b.q.load_clean_weights();
  int64_t bytes = 0;
  for (const auto& t : b.q.tensors) bytes += t.codes.numel() * t.codes.element_size();
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * bytes);
}

// Draw, inject and dequantize one whole-model pattern; arg: rate in units of 1e-4 (issue 4's 0.01%,
// 0.1%, 1%, 10%; 0: copy the clean codes, no draw).
void BM_InjectDequantize(benchmark::State& state) { time_inject_dequantize(state, static_cast<double>(state.range(0)) * 1e-4); }
BENCHMARK(BM_InjectDequantize)->ArgName("p_e4")->Arg(0)->Arg(1)->Arg(2)->Arg(5)->Arg(10)->Arg(20)->Arg(100)->Arg(1000)->Unit(benchmark::kMicrosecond)
    ->UseRealTime()->MinTime(1.0);

// The same through eval::WeightInjector, as the sweep does it: on the CPU only the elements the
// previous and the new pattern change are written (NOTE [Incremental injection]); on CUDA one fused
// kernel copies, flips and dequantizes (bits::inject_dequantize_cuda). Counter `path`: 0
// incremental, 1 fused, 2 dense (as above). Seeds change every iteration, so each pattern undoes a
// different previous one.
void BM_WeightInjector(benchmark::State& state) {
  Bench& b = bench();
  const bits::ErrorModel model = bits::ErrorModel::parse("random", static_cast<double>(state.range(0)) * 1e-4);
  torch::NoGradGuard no_grad;
  eval::WeightInjector injector(b.q);
  uint64_t seed = 1000;
  injector.inject(model, seed++);  // a previous pattern to undo, as in a sweep
  for (auto _ : state) {
    injector.inject(model, seed++);
    sync(b.device);
  }
  injector.load_clean();
  int64_t bytes = 0;
  for (const auto& t : b.q.tensors) bytes += t.codes.numel() * t.codes.element_size();
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * bytes);
  state.counters["path"] = static_cast<double>(injector.path());
}
BENCHMARK(BM_WeightInjector)->ArgName("p_e4")->Arg(1)->Arg(2)->Arg(5)->Arg(10)->Arg(20)->Arg(100)->Arg(1000)
    ->Unit(benchmark::kMicrosecond)->UseRealTime()->MinTime(1.0);

// The host's share of a pattern, no kernel run: the task table of every code tensor (checks and
// per-tensor kernel parameters). On a GPU the launches of BM_InjectDequantize wait for it.
void BM_InjectTasksHost(benchmark::State& state) {
  Bench& b = bench();
  const std::vector<bits::CodeTensor> codes = eval::perturbable_codes(b.q);
  const bits::ErrorModel model = bits::ErrorModel::parse("random", 0.01);
  for (auto _ : state) benchmark::DoNotOptimize(bits::inject_tasks(codes, model));
  state.counters["tensors"] = static_cast<double>(codes.size());
}
BENCHMARK(BM_InjectTasksHost)->Unit(benchmark::kMicrosecond)->UseRealTime()->MinTime(0.5);

// The floor of the above that no sampler can lower: dequantize every code into the float weights
// the network reads (4 bytes written per 8-bit code), with no pattern drawn.
void BM_DequantizeOnly(benchmark::State& state) { time_inject_dequantize(state, -1.0); }
BENCHMARK(BM_DequantizeOnly)->Unit(benchmark::kMicrosecond)->UseRealTime()->MinTime(1.0);

// Baseline of the above: copy every code tensor once (what any pattern must at least read and write).
void BM_CopyCodes(benchmark::State& state) {
  Bench& b = bench();
  std::vector<at::Tensor> copies;
  int64_t bytes = 0;
  for (const auto& t : b.q.tensors) {
    copies.push_back(at::empty_like(t.codes));
    bytes += t.codes.numel() * t.codes.element_size();
  }
  for (auto _ : state) {
    for (size_t i = 0; i < copies.size(); ++i) copies[i].copy_(b.q.tensors[i].codes);
    sync(b.device);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * bytes);
}
BENCHMARK(BM_CopyCodes)->Unit(benchmark::kMicrosecond)->UseRealTime()->MinTime(1.0);

// arg 0: float, 1: quantization-aware (8-bit rquant, clip 0.1), 2: + RandBET at 1% from the first
// step. Steady-state images/s after the trainer's 10 warm-up steps, 160 steps timed (3 passes
// over the 60 batches): RandBET's step ratio was 1.97 against the goal's 2.2 over 50 steps, a
// window of under a second on a GPU.
void BM_TrainStep(benchmark::State& state) {
  Bench& b = bench();
  const int mode = static_cast<int>(state.range(0));
  double images_per_second = 0;
  for (auto _ : state) {
    at::manual_seed(2);
    auto net = models::build_model(b.spec);
    net->to(b.device);
    std::unique_ptr<quant::QuantAwareTraining> qat;
    std::unique_ptr<train::RandomBitErrorTraining> randbet;
    train::StepHooks hooks;
    if (mode >= 1) {
      qat = std::make_unique<quant::QuantAwareTraining>(*net, quant::QuantScheme::preset("rquant", 8, 0.1f));
      if (mode == 2) {
        train::RandBETOptions options;
        options.rate = 0.01;
        options.start_loss = 1e30;  // random labels never get the loss down: inject from step 1
        randbet = std::make_unique<train::RandomBitErrorTraining>(*net, *qat, options);
      }
      hooks = train::robust_training_hooks(*qat, randbet.get());
    }
    train::TrainOptions options;
    options.epochs = 3;
    options.batch_size = kTrainBatch;
    options.max_steps = 170;
    options.progress = false;
    const train::TrainResult r = train::train(*net, b.train, options, hooks);
    images_per_second = r.steady_images_per_second;
  }
  state.counters["train_images_per_second"] = images_per_second;
}
BENCHMARK(BM_TrainStep)->DenseRange(0, 2)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

// The reference's full CIFAR-10 suite: 13 rates x 50 patterns x 9000 test images (issue 7's goal:
// <= 60 s on an H100). Only with BITROBUST_BENCH_FULL_SUITE=1: minutes on a CPU.
void BM_ReferenceSuite(benchmark::State& state) {
  if (!std::getenv("BITROBUST_BENCH_FULL_SUITE")) {
    state.SkipWithError("set BITROBUST_BENCH_FULL_SUITE=1 to run the 13 x 50 x 9000 suite");
    for (auto _ : state) {
    }
    return;
  }
  Bench& b = bench();
  const data::Dataset test = b.test.head(9000);
  eval::SweepOptions options;
  // 13 rates spanning the reference's CIFAR-10 range, 0.005% to 2.5%.
  options.rates = {5e-5, 1e-4, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 2.5e-3, 5e-3, 7.5e-3, 1e-2, 1.5e-2, 2e-2, 2.5e-2};
  options.patterns = 50;
  options.batch_size = kEvalBatch;
  options.progress = false;
  // Warm-up, untimed: the suite runs once, first in its process, so CUDA's lazy module loading,
  // cuDNN's set-up and the allocator's growth would otherwise fall into its one timed run.
  eval::SweepOptions warm = options;
  warm.rates = {1e-2};
  warm.patterns = 1;
  eval::run_sweep(*b.net, b.q, test, warm);
  for (auto _ : state) {
    const eval::SweepResult r = eval::run_sweep(*b.net, b.q, test, options);
    benchmark::DoNotOptimize(r.results.back().rerr_mean);
  }
  set_rate(state, "images_patterns_per_second", static_cast<double>(state.iterations()) * 13 * 50 * test.size());
}
BENCHMARK(BM_ReferenceSuite)->Unit(benchmark::kSecond)->UseRealTime()->Iterations(1);

}  // namespace

int main(int argc, char** argv) {
  choose_openblas_core();  // first, as the CLI does (NOTE [OpenBLAS core])
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  // Named in the JSON's context (written before the first benchmark runs), so that a table read
  // later says what was measured.
  const Bench& b = bench();
  benchmark::AddCustomContext("bitrobust_device", b.device.str());
  benchmark::AddCustomContext("bitrobust_model", b.spec.arch + " (" + std::to_string(models::parameter_count(*b.net)) +
                                                     " parameters, GroupNorm, " + std::to_string(b.spec.in_channels) +
                                                     "x" + std::to_string(b.spec.height) + "x" +
                                                     std::to_string(b.spec.width) + " input)");
  benchmark::AddCustomContext("bitrobust_cpu", describe(this_cpu()));
  benchmark::AddCustomContext("bitrobust_precision", "LibTorch defaults (on CUDA: TF32 convolutions)");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
