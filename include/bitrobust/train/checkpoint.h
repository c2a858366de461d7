#pragma once
// NOTE [Checkpoints]: `train` writes one atomically after every complete epoch, and `train --resume`
// continues from it. It is a Torch archive holding
//   "model"          the network's parameters and buffers
//   "optimizer"      SGD's state: a momentum buffer per parameter (LibTorch's own layout)
//   "epochs_done", "steps", "seed", "final_loss", "final_train_error"   scalar tensors
//   "settings"       the run's settings as JSON (run_settings): a resume with others is an error
//   "hook_state"     what the step hooks carry (RandBET's step count and curriculum), as JSON
// On the CPU a resumed run ends with exactly the weights of an uninterrupted one, so everything it
// reads back is checked against the run that resumes it before training goes on.
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "bitrobust/models/models.h"
#include "bitrobust/train/trainer.h"

namespace torch::optim {
class SGD;
}

namespace bitrobust::train {

struct CheckpointState {
  int64_t epochs_done = 0;
  int64_t steps = 0;
  /// The last completed epoch's mean loss and training error, so that a run resumed with nothing
  /// left to train still reports them (NaN: a checkpoint written before they were stored).
  double final_loss = std::numeric_limits<double>::quiet_NaN();
  double final_train_error = std::numeric_limits<double>::quiet_NaN();
  /// The CPU and kernels of the run that wrote it (cpu_description.h, as JSON; empty in checkpoints
  /// written before 2026-12-06).
  std::string cpu;
};

/// The key LibTorch's optimizers keep a parameter's state under: its TensorImpl's address, as text
/// in LibTorch 1.13 (c10::guts::to_string, an ostream of the pointer), as the pointer itself since
/// 2.2 (pytorch/pytorch#108480, which also removed c10::guts::to_string). Compiles against both.
template <typename Optimizer>
auto optimizer_state_key(const Optimizer& optimizer, const at::Tensor& param) {
  using Key = std::decay_t<decltype(optimizer.state().begin()->first)>;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream text;
    text << param.unsafeGetTensorImpl();
    return text.str();
  } else {
    return static_cast<Key>(param.unsafeGetTensorImpl());
  }
}

/// Whether an optimizer keyed like `optimizer` maps the state keys a checkpoint stores (`saved_keys`)
/// back to its parameters. LibTorch since 2.2 parses them as decimal pointers (std::stoull); the
/// hex text 1.13 writes ("0x55d1c8...") would all parse as 0, every state landing on one key and
/// the check of the momentum buffers then calling a sound file damaged. 1.13 takes any text as an
/// opaque key, so a checkpoint of a 2.x run resumes there.
template <typename Optimizer>
bool optimizer_state_keys_readable(const Optimizer& optimizer, const std::vector<std::string>& saved_keys) {
  using Key = std::decay_t<decltype(optimizer.state().begin()->first)>;
  if constexpr (std::is_same_v<Key, std::string>) {
    return true;
  } else {
    return std::none_of(saved_keys.begin(), saved_keys.end(),
                        [](const std::string& key) { return key.rfind("0x", 0) == 0; });
  }
}

/// What a CPU run resumed from `checkpoint` says about the CPU and kernels it was written on
/// (`recorded`: its CheckpointState::cpu), since the weights of an uninterrupted run are promised
/// only on the same ones: a note naming both where they differ, one saying so where the checkpoint
/// records none (written before 2026-12-06) or none that parses, and "" where they are the same.
std::string resume_kernels_note(const std::string& checkpoint, const std::string& recorded);

/// The run's settings (TrainOptions::settings) with the schedule and the augmentation it trains
/// with (AugmentOptions::describe), as stored in checkpoints.
nlohmann::json run_settings(const TrainOptions& options, const std::string& augmentation);

/// Writes the checkpoint atomically (io::save_archive_atomic), with this process's CPU (this_cpu(); state.cpu
/// is not read).
void save_checkpoint(const std::string& path, models::Classifier& net, torch::optim::SGD& optimizer,
                     const CheckpointState& state, const TrainOptions& options, const std::string& augmentation,
                     const StepHooks& hooks);

/// Loads a checkpoint into `net`, `optimizer` and the hooks' state, after checking that it is one
/// (not a model file), undamaged (io::read_archive_checked), of a run with these settings and seed,
/// at a step this run can continue from (`steps_per_epoch`), with finite weights and momentum
/// buffers of their parameters' shapes and types. Every failure is a bitrobust::Error naming the file.
CheckpointState load_checkpoint(const std::string& path, models::Classifier& net, torch::optim::SGD& optimizer,
                                const TrainOptions& options, const std::string& augmentation,
                                const StepHooks& hooks, at::Device device, int64_t steps_per_epoch);

}  // namespace bitrobust::train
