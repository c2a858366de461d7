#include "bitrobust/train/checkpoint.h"

#include <ATen/ATen.h>
#include <torch/optim/sgd.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/version.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "bitrobust/common/cpu_description.h"
#include "bitrobust/common/error.h"
#include "bitrobust/io/model_file.h"

namespace bitrobust::train {
namespace {

/// LibTorch's SGD::load takes each momentum buffer as stored, and its step would then fail with an
/// error of its own (a shape), or go on with another type than a run that was not interrupted. The
/// buffers a resumed run continues with must be what the uninterrupted run had: of their parameters'
/// shapes, types and devices, and finite; and, once a step with momentum has run, one for every
/// parameter (every parameter of these networks gets a gradient: Models.EveryArchitecture...), or
/// the resumed run would start that parameter's momentum afresh.
void check_momentum_buffers(models::Classifier& net, const torch::optim::SGD& optimizer, const std::string& file,
                            bool every_parameter) {
  for (const auto& item : net.named_parameters()) {
    const at::Tensor& param = item.value();
    const auto found = optimizer.state().find(optimizer_state_key(optimizer, param));
    BR_CHECK(found != optimizer.state().end() || !every_parameter, file, ": the optimizer holds no momentum buffer ",
             "for parameter ", item.key(), " (damaged or edited file)");
    if (found == optimizer.state().end()) continue;
    const auto* sgd = dynamic_cast<const torch::optim::SGDParamState*>(found->second.get());
    BR_CHECK(sgd != nullptr, file, ": the optimizer state of parameter ", item.key(), " is not SGD's");
    const at::Tensor& buffer = sgd->momentum_buffer();
    BR_CHECK(buffer.defined(), file, ": the optimizer state of parameter ", item.key(), " has no momentum buffer");
    BR_CHECK(buffer.sizes() == param.sizes() && buffer.scalar_type() == param.scalar_type() &&
                 buffer.device() == param.device(),
             file, ": the momentum buffer of parameter ", item.key(), " is ", buffer.scalar_type(), " of shape ",
             buffer.sizes(), " on ", buffer.device(), ", its parameter ", param.scalar_type(), " of shape ",
             param.sizes(), " on ", param.device(), " (damaged or edited file)");
    BR_CHECK(at::isfinite(buffer).all().item<bool>(), file, ": the momentum buffer of parameter ", item.key(),
             " holds NaN or infinite values (damaged file)");
  }
}

/// The parameters' names in the order the optimizer holds their momentum buffers: LibTorch's
/// SGD::load gives buffers back by position, so a network whose parameters were registered in
/// another order (another version of bitrobust) would get its buffers swapped among parameters of
/// one shape (a convolution's bias and its normalization's weight and bias) without any error.
std::string parameter_order(models::Classifier& net) {
  std::string names;
  for (const auto& item : net.named_parameters()) names += item.key() + "\n";
  return names;
}

}  // namespace

std::string resume_kernels_note(const std::string& checkpoint, const std::string& recorded) {
  const std::string now = describe(this_cpu());
  const std::string consequence = "the run continues, but its float sums may round otherwise, so it need not end "
                                  "with the weights of an uninterrupted run";
  const nlohmann::json parsed = nlohmann::json::parse(recorded, nullptr, false);
  if (!parsed.is_object()) {  // nothing to compare with
    const std::string record = recorded.empty() ? "records no CPU (written before 2026-12-06)"
                                                : "records its CPU in a form that does not parse";
    return "note: checkpoint " + checkpoint + " " + record + ": if it was written on another CPU or with other " +
           "kernels than this run's (" + now + "), " + consequence;
  }
  const CpuDescription before = cpu_from_json(parsed);
  if (same_cpu_and_kernels(before, this_cpu())) return "";
  return "note: checkpoint " + checkpoint + " was written on another CPU or with other kernels (" + describe(before) +
         ") than this run's (" + now + "): " + consequence;
}

nlohmann::json run_settings(const TrainOptions& options, const std::string& augmentation) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(options.settings);
  } catch (const nlohmann::json::exception& e) {
    throw Error("train: settings are not JSON: " + json_error_text(e.what()));
  }
  BR_CHECK(j.is_object(), "train: settings must be a JSON object");
  j["epochs"] = options.epochs;
  j["batch"] = options.batch_size;
  j["lr"] = options.lr;
  j["momentum"] = options.momentum;
  j["nesterov"] = options.nesterov;
  j["weight_decay"] = options.weight_decay;
  j["augmentation"] = augmentation;
  return j;
}

void save_checkpoint(const std::string& path, models::Classifier& net, torch::optim::SGD& optimizer,
                     const CheckpointState& state, const TrainOptions& options, const std::string& augmentation,
                     const StepHooks& hooks) {
  const uint64_t seed = options.seed;
  torch::serialize::OutputArchive archive, model_archive, optimizer_archive;
  net.save(model_archive);
  optimizer.save(optimizer_archive);
  archive.write("model", model_archive);
  archive.write("optimizer", optimizer_archive);
  archive.write("epochs_done", at::scalar_tensor(state.epochs_done, at::kLong));
  archive.write("steps", at::scalar_tensor(state.steps, at::kLong));
  archive.write("final_loss", at::scalar_tensor(state.final_loss, at::kDouble));
  archive.write("final_train_error", at::scalar_tensor(state.final_train_error, at::kDouble));
  archive.write("seed", at::scalar_tensor(static_cast<int64_t>(seed), at::kLong));
  archive.write("settings", c10::IValue(run_settings(options, augmentation).dump()));
  archive.write("parameter_order", c10::IValue(parameter_order(net)));
  archive.write("cpu", c10::IValue(to_json(this_cpu()).dump()));
  if (hooks.save_state) archive.write("hook_state", c10::IValue(hooks.save_state()));
  io::save_archive_atomic(archive, path, "checkpoint");
}

CheckpointState load_checkpoint(const std::string& path, models::Classifier& net, torch::optim::SGD& optimizer,
                                const TrainOptions& options, const std::string& augmentation,
                                const StepHooks& hooks, at::Device device, int64_t steps_per_epoch) {
  const uint64_t seed = options.seed;
  torch::serialize::InputArchive archive, model_archive, optimizer_archive;
  // A damaged checkpoint would otherwise resume into garbage weights (NOTE [Damaged model files]).
  // The check runs on a CPU load: loading onto a GPU copies every storage, reading a short record
  // past its end before any check could run.
  const io::CheckedArchive checked = io::read_archive_checked(path, "checkpoint");
  if (!device.is_cpu()) {
    torch::serialize::InputArchive on_cpu;
    io::load_checked_archive(on_cpu, checked, at::Device(at::kCPU));
  }
  io::load_checked_archive(archive, checked, device);
  {
    const std::vector<std::string> keys = archive.keys();
    const auto has = [&keys](const char* key) { return std::find(keys.begin(), keys.end(), key) != keys.end(); };
    BR_CHECK(!has("bitrobust_format"), "checkpoint ", path,
             " is a model file, not a training checkpoint (train writes its checkpoint, the model file's name + "
             "'.ckpt' unless --checkpoint says otherwise, at the end of each epoch)");
    for (const char* key : {"model", "optimizer", "epochs_done", "steps", "seed"}) {
      BR_CHECK(has(key), "checkpoint ", path, " is not a bitrobust training checkpoint (it has no '", key, "' record)");
    }
  }
  try {
    // Settings first: a checkpoint of another model would otherwise fail on its first tensor.
    at::Tensor saved_seed;
    archive.read("seed", saved_seed);
    c10::IValue saved_settings;
    if (archive.try_read("settings", saved_settings) && saved_settings.isString()) {  // older checkpoints: none
      const nlohmann::json before = nlohmann::json::parse(saved_settings.toStringRef(), nullptr, false);
      const nlohmann::json now = run_settings(options, augmentation);
      // The seed is a record of its own (it predates the settings), listed with the other differences.
      std::string differences;
      if (saved_seed.item<int64_t>() != static_cast<int64_t>(seed)) {
        differences = "seed " + std::to_string(saved_seed.item<int64_t>()) + " -> " + std::to_string(seed);
      }
      nlohmann::json keys = now;  // every key of either side, in order
      if (before.is_object()) keys.update(before);
      for (const auto& item : keys.items()) {
        const std::string& key = item.key();
        // Settings recorded since 2026-12-05: checkpoints written before resume without them.
        static const std::set<std::string> kRecordedLater = {"data", "threads", "device"};
        if (kRecordedLater.count(key) > 0 && !(before.is_object() && before.contains(key))) continue;
        const nlohmann::json old_value = before.is_object() && before.contains(key) ? before[key] : nlohmann::json();
        const nlohmann::json new_value = now.contains(key) ? now[key] : nlohmann::json();
        if (old_value != new_value) {
          differences += (differences.empty() ? "" : ", ") + key + " " + old_value.dump() + " -> " + new_value.dump();
        }
      }
      BR_CHECK(differences.empty(), "checkpoint ", path, " belongs to a run with other settings (", differences,
               "); resume with the same options, or remove the checkpoint to start over");
    }
    archive.read("model", model_archive);
    archive.read("optimizer", optimizer_archive);
    io::load_module_checked(net, model_archive, "checkpoint " + path);
    c10::IValue order;  // (checkpoints written before 2026-12-05 have none)
    if (archive.try_read("parameter_order", order)) {
      BR_CHECK(order.isString() && order.toStringRef() == parameter_order(net), "checkpoint ", path,
               " holds its momentum buffers in another parameter order than this network's (written by another "
               "version of bitrobust?): resuming would give them to the wrong parameters; remove it to start over");
    }
    {
      torch::serialize::InputArchive states;
      BR_CHECK(!optimizer_archive.try_read("state", states) || optimizer_state_keys_readable(optimizer, states.keys()),
               "checkpoint ", path, " was written by LibTorch 1.x, whose optimizer state this LibTorch (",
               TORCH_VERSION, ") cannot map back to the parameters; resume it with the LibTorch that wrote it, or "
               "remove it to start over");
    }
    optimizer.load(optimizer_archive);
    at::Tensor epochs, steps;
    archive.read("epochs_done", epochs);
    archive.read("steps", steps);
    BR_CHECK(saved_seed.item<int64_t>() == static_cast<int64_t>(seed), "checkpoint ", path,
             " was written with --seed ", saved_seed.item<int64_t>(), ", not ", seed);
    // Checkpoints are written at the end of complete epochs only.
    const int64_t epochs_done = epochs.item<int64_t>(), steps_done = steps.item<int64_t>();
    BR_CHECK(epochs_done >= 1 && epochs_done <= options.epochs && steps_done == epochs_done * steps_per_epoch,
             "checkpoint ", path, " records ", epochs_done, " epochs and ", steps_done, " steps, which this run (",
             options.epochs, " epochs of ", steps_per_epoch,
             " steps) cannot continue: it was written on a data set of another size, or is damaged");
    io::check_finite_module(net, "checkpoint " + path);
    check_momentum_buffers(net, optimizer, "checkpoint " + path, options.momentum > 0 && steps_done > 0);
    if (hooks.restore_state) {
      c10::IValue hook_state;
      BR_CHECK(archive.try_read("hook_state", hook_state) && hook_state.isString(), "checkpoint ", path,
               " has no RandBET state (step count, curriculum): it was written by an older version and cannot be "
               "resumed exactly; remove it to start over");
      try {
        hooks.restore_state(hook_state.toStringRef(), steps_done);
      } catch (const Error& e) {
        throw Error("checkpoint " + path + ": " + e.what());
      }
    }
    CheckpointState state;
    state.epochs_done = epochs_done;
    state.steps = steps_done;
    at::Tensor figure;
    if (archive.try_read("final_loss", figure)) state.final_loss = figure.item<double>();
    if (archive.try_read("final_train_error", figure)) state.final_train_error = figure.item<double>();
    c10::IValue cpu;
    if (archive.try_read("cpu", cpu) && cpu.isString()) state.cpu = cpu.toStringRef();
    return state;
  } catch (const c10::Error& e) {
    throw Error("checkpoint " + path + " cannot be resumed: " + torch_error_text(e.what_without_backtrace()));
  } catch (const Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    // LibTorch's SGD::load reads values by the names its counters give, unchecked: a name the
    // archive lacks is TorchScript's ObjectAttributeError, no c10::Error (found by fuzz_checkpoint).
    throw Error("checkpoint " + path + " cannot be resumed: " + e.what());
  }
}

}  // namespace bitrobust::train
