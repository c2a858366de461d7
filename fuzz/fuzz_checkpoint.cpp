// libFuzzer harness: training checkpoints (NOTE [Checkpoints]) as `train --resume` reads them and
// trains on, for one fixed run: a tiny MLP, quantization-aware with clipping and RandBET, so that
// the RandBET state is read and the resumed steps inject errors. Properties: a refusal is a
// bitrobust::Error; an accepted checkpoint gives finite weights, momentum buffers of their
// parameters' shapes and counters this run can continue from; and the resumed run trains its last
// epoch without any other exception (LibTorch's own errors from inside a step included). Each input
// runs as it is and with its records' checksums fixed (fuzz_util.h).
// Only a checkpoint of exactly this run gets past the settings check, so the harness writes its own
// seed: BITROBUST_FUZZ_SEED_DIR=DIR makes it train the run's first epoch into DIR/run.ckpt before
// fuzzing (scripts/fuzz.sh does).
#include <torch/optim/sgd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "bitrobust/quant/model_quantization.h"
#include "bitrobust/train/checkpoint.h"
#include "bitrobust/train/randbet.h"
#include "bitrobust/train/trainer.h"
#include "fuzz_util.h"

using namespace bitrobust;

namespace {

constexpr int64_t kImages = 48, kBatch = 16, kStepsPerEpoch = kImages / kBatch;

/// 48 images of 8x8 whose class (of 4) is the bright band, with deterministic noise.
data::Dataset tiny_dataset() {
  data::Dataset d;
  d.images = at::empty({kImages, 1, 8, 8}, at::kByte);
  d.labels = at::empty({kImages}, at::kLong);
  uint32_t state = 12345;
  const auto next = [&state]() { return state = state * 1664525u + 1013904223u; };
  for (int64_t i = 0; i < kImages; ++i) {
    const int64_t k = i % 4;
    d.labels.data_ptr<int64_t>()[i] = k;
    for (int64_t p = 0; p < 64; ++p)
      d.images.data_ptr<uint8_t>()[i * 64 + p] = static_cast<uint8_t>((next() >> 25) + ((p / 16) == k ? 128 : 0));
  }
  d.num_classes = 4;
  d.name = "mnist";
  d.split = "train";
  d.source = "fuzz";
  return d;
}

/// The one run every input is a checkpoint of, built afresh for each (no state carries over).
struct Run {
  data::Dataset data = tiny_dataset();
  models::ModelSpec spec;
  train::TrainOptions options;
  std::shared_ptr<models::Classifier> net;
  std::unique_ptr<quant::QuantAwareTraining> qat;
  std::unique_ptr<train::RandomBitErrorTraining> randbet;
  train::StepHooks hooks;

  explicit Run(const std::string& checkpoint) {
    spec.arch = "mlp";
    spec.norm = "regn";
    spec.in_channels = 1;
    spec.height = spec.width = 8;
    spec.num_classes = 4;
    spec.units = {8};
    options.epochs = 2;
    options.batch_size = kBatch;
    options.seed = 3;
    options.progress = false;
    options.checkpoint = checkpoint;
    options.resume = true;
    torch::manual_seed(1);
    net = models::build_model(spec);
    qat = std::make_unique<quant::QuantAwareTraining>(*net, quant::QuantScheme::preset("rquant", 4, 0.1f));
    train::RandBETOptions randbet_options;
    randbet_options.rate = 0.01;
    randbet_options.start_loss = 100;  // errors from the first step
    randbet = std::make_unique<train::RandomBitErrorTraining>(*net, *qat, randbet_options);
    hooks = train::robust_training_hooks(*qat, randbet.get());
  }
  std::string augmentation() const { return train::training_augmentation(data.name, options).describe(); }
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("BITROBUST_FUZZ_SEED_DIR")) {
    std::filesystem::create_directories(dir);
    Run run(std::string(dir) + "/run.ckpt");
    run.options.resume = false;
    run.options.max_steps = kStepsPerEpoch;  // the first epoch, as an interrupted run leaves it
    train::train(*run.net, run.data, run.options, run.hooks);
  }
  return 0;
}

namespace {

void check_checkpoint(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input_file(data, size, "run.ckpt");
  {
    Run run(path);
    torch::optim::SGD optimizer(run.net->parameters(), torch::optim::SGDOptions(run.options.lr)
                                                           .momentum(run.options.momentum)
                                                           .nesterov(true)
                                                           .weight_decay(run.options.weight_decay));
    train::CheckpointState state;
    if (!fuzz::accepted([&] {
          state = train::load_checkpoint(path, *run.net, optimizer, run.options, run.augmentation(), run.hooks,
                                         at::Device(at::kCPU), kStepsPerEpoch);
        }))
      return;
    if (state.epochs_done < 1 || state.epochs_done > run.options.epochs || state.steps != state.epochs_done * kStepsPerEpoch)
      fuzz::property_failed("an accepted checkpoint's counters are not of a complete epoch of this run");
    for (const auto& p : run.net->named_parameters()) {
      if (!p.value().isfinite().all().item<bool>()) fuzz::property_failed("an accepted checkpoint holds a non-finite weight");
      const auto found = optimizer.state().find(train::optimizer_state_key(optimizer, p.value()));
      if (found == optimizer.state().end()) continue;
      const auto& buffer = static_cast<const torch::optim::SGDParamState&>(*found->second).momentum_buffer();
      if (!buffer.defined() || buffer.sizes() != p.value().sizes() || buffer.scalar_type() != p.value().scalar_type())
        fuzz::property_failed("an accepted checkpoint's momentum buffer is not of its parameter's shape and type");
    }
  }
  Run run(path);
  fuzz::accepted([&] { train::train(*run.net, run.data, run.options, run.hooks); });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::as_is_and_with_checksums_fixed(data, size, check_checkpoint);
  return 0;
}
