#include "bitrobust/train/checkpoint.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "bitrobust/common/cpu_description.h"
#include "bitrobust/common/error.h"
#include "archive_util.h"
#include "model_fixtures.h"
#include "test_util.h"

using namespace bitrobust;

namespace {

struct TinyRun {
  data::Dataset data = test_util::synthetic_dataset(64);  // 2 steps per epoch
  train::TrainOptions options;
  std::string augmentation;
  TinyRun() {
    options.epochs = 2;
    options.batch_size = 32;
    options.seed = 5;
    options.progress = false;
    augmentation = train::training_augmentation(data.name, options).describe();
  }
  /// Trains the first of the two epochs into `checkpoint`, as a run killed in the second leaves it;
  /// the options then resume from it. Returns the network trained.
  std::shared_ptr<models::Classifier> first_epoch(const std::string& checkpoint) {
    options.checkpoint = checkpoint;
    options.max_steps = 2;
    auto net = models::build_model(test_util::tiny_mlp_spec(32, "gn"));
    train::train(*net, data, options);
    options.max_steps = 0;
    options.resume = true;
    return net;
  }
  torch::optim::SGD optimizer_for(models::Classifier& net) const {
    return torch::optim::SGD(net.parameters(), torch::optim::SGDOptions(options.lr)
                                                   .momentum(options.momentum)
                                                   .nesterov(true)
                                                   .weight_decay(options.weight_decay));
  }
};

torch::optim::SGDParamState& momentum_state(torch::optim::SGD& optimizer, const at::Tensor& param) {
  return static_cast<torch::optim::SGDParamState&>(
      *optimizer.state().at(train::optimizer_state_key(optimizer, param)));
}

}  // namespace

// What train writes after an epoch comes back exactly: weights, every momentum buffer, the counters.
TEST(Checkpoint, LoadingGivesBackTheWeightsMomentumBuffersAndCounters) {
  TinyRun run;
  test_util::TempDir dir;
  auto net = run.first_epoch(dir.file("run.ckpt"));

  auto loaded = models::build_model(test_util::tiny_mlp_spec(32, "gn"));
  torch::optim::SGD optimizer = run.optimizer_for(*loaded);
  const train::CheckpointState state = train::load_checkpoint(run.options.checkpoint, *loaded, optimizer, run.options,
                                                              run.augmentation, {}, at::Device(at::kCPU), 2);
  EXPECT_EQ(state.epochs_done, 1);
  EXPECT_EQ(state.steps, 2);
  EXPECT_TRUE(std::isfinite(state.final_loss));
  const auto params = net->named_parameters();
  ASSERT_EQ(optimizer.state().size(), params.size());
  for (const auto& item : loaded->named_parameters()) {
    EXPECT_TRUE(torch::equal(item.value(), params[item.key()])) << item.key();
    const at::Tensor& buffer = momentum_state(optimizer, item.value()).momentum_buffer();
    EXPECT_EQ(buffer.sizes(), item.value().sizes()) << item.key();
    EXPECT_GT(buffer.abs().sum().item<double>(), 0) << item.key();  // two steps of gradients
  }
}

// The momentum buffers written are the optimizer's own, bit for bit (not a step stale, not scaled),
// each under its own parameter; so are the weights and counters.
TEST(Checkpoint, SavedMomentumBuffersComeBackExactly) {
  TinyRun run;
  test_util::TempDir dir;
  run.options.checkpoint = dir.file("manual.ckpt");
  torch::manual_seed(9);
  auto net = models::build_model(test_util::tiny_mlp_spec(32, "gn"));
  torch::optim::SGD optimizer = run.optimizer_for(*net);
  for (int step = 0; step < 2; ++step) {  // two steps of made-up gradients, each parameter its own
    for (auto& p : net->parameters()) p.mutable_grad() = torch::randn_like(p);
    optimizer.step();
  }
  train::CheckpointState state;
  state.epochs_done = 1;
  state.steps = 2;
  state.final_loss = 0.5;
  state.final_train_error = 0.25;
  train::save_checkpoint(run.options.checkpoint, *net, optimizer, state, run.options, run.augmentation, {});

  auto loaded = models::build_model(test_util::tiny_mlp_spec(32, "gn"));
  torch::optim::SGD loaded_optimizer = run.optimizer_for(*loaded);
  const train::CheckpointState back = train::load_checkpoint(run.options.checkpoint, *loaded, loaded_optimizer,
                                                             run.options, run.augmentation, {}, at::Device(at::kCPU), 2);
  EXPECT_EQ(back.epochs_done, 1);
  EXPECT_EQ(back.steps, 2);
  EXPECT_EQ(back.final_loss, 0.5);
  EXPECT_EQ(back.final_train_error, 0.25);
  const auto params = net->named_parameters();
  for (const auto& item : loaded->named_parameters()) {
    EXPECT_TRUE(torch::equal(item.value(), params[item.key()])) << item.key();
    const at::Tensor& saved = momentum_state(optimizer, params[item.key()]).momentum_buffer();
    const at::Tensor& restored = momentum_state(loaded_optimizer, item.value()).momentum_buffer();
    EXPECT_TRUE(torch::equal(restored, saved)) << item.key();
  }
}

// LibTorch's SGD::load takes a momentum buffer of any shape or type; the resumed step would then fail
// with an error of LibTorch's, or go on in another precision than the uninterrupted run.
TEST(Checkpoint, MomentumBuffersUnlikeTheirParametersAreAnErrorNamingTheParameter) {
  TinyRun run;
  test_util::TempDir dir;
  auto net = run.first_epoch(dir.file("run.ckpt"));

  const auto edited = [&](const std::string& name, const std::function<at::Tensor(const at::Tensor&)>& edit) {
    auto copy = models::build_model(test_util::tiny_mlp_spec(32, "gn"));
    torch::optim::SGD optimizer = run.optimizer_for(*copy);
    const train::CheckpointState state = train::load_checkpoint(dir.file("run.ckpt"), *copy, optimizer, run.options,
                                                                run.augmentation, {}, at::Device(at::kCPU), 2);
    const at::Tensor param = copy->named_parameters()["fc1.weight"];
    auto& s = momentum_state(optimizer, param);
    s.momentum_buffer(edit(s.momentum_buffer()));
    train::save_checkpoint(dir.file(name), *copy, optimizer, state, run.options, run.augmentation, {});
    auto resumed = run.options;
    resumed.checkpoint = dir.file(name);
    return test_util::error_of([&] { train::train(*net, run.data, resumed); });
  };
  const std::string prefix = "checkpoint " + dir.file("t.ckpt") + ": the momentum buffer of parameter fc1.weight is ";
  std::string message = edited("t.ckpt", [](const at::Tensor& b) { return b.t().contiguous(); });
  EXPECT_TRUE(test_util::contains(message, prefix + "Float of shape [")) << message;
  EXPECT_TRUE(test_util::contains(message, "(damaged or edited file)")) << message;
  message = edited("d.ckpt", [](const at::Tensor& b) { return b.to(at::kDouble); });
  EXPECT_TRUE(test_util::contains(message, "the momentum buffer of parameter fc1.weight is Double of shape")) << message;
  message = edited("n.ckpt", [](const at::Tensor& b) {
    at::Tensor nan = b.clone();
    nan.view(-1)[3] = std::numeric_limits<float>::quiet_NaN();
    return nan;
  });
  EXPECT_TRUE(test_util::contains(
      message, "checkpoint " + dir.file("n.ckpt") + ": the momentum buffer of parameter fc1.weight holds NaN"))
      << message;
  // A parameter's state left out: its momentum would start afresh.
  {
    auto copy = models::build_model(test_util::tiny_mlp_spec(32, "gn"));
    torch::optim::SGD optimizer = run.optimizer_for(*copy);
    const train::CheckpointState state = train::load_checkpoint(dir.file("run.ckpt"), *copy, optimizer, run.options,
                                                                run.augmentation, {}, at::Device(at::kCPU), 2);
    optimizer.state().erase(train::optimizer_state_key(optimizer, copy->named_parameters()["fc1.bias"]));
    train::save_checkpoint(dir.file("missing.ckpt"), *copy, optimizer, state, run.options, run.augmentation, {});
    auto resumed = run.options;
    resumed.checkpoint = dir.file("missing.ckpt");
    EXPECT_ERROR_CONTAINS(train::train(*net, run.data, resumed),
                          "checkpoint " + dir.file("missing.ckpt") +
                              ": the optimizer holds no momentum buffer for parameter fc1.bias");
  }
  // Unedited, the same path resumes.
  EXPECT_EQ(edited("ok.ckpt", [](const at::Tensor& b) { return b; }), "");
}

// LibTorch gives momentum buffers back by position: a checkpoint whose parameters were in another
// order (another version's network) would hand a bias's buffer to a normalization weight of the
// same shape. The order is recorded, and another one is refused.
TEST(Checkpoint, MomentumBuffersOfAnotherParameterOrderAreRefused) {
  TinyRun run;
  test_util::TempDir dir;
  auto net = run.first_epoch(dir.file("run.ckpt"));
  const auto params = net->named_parameters();
  ASSERT_GE(params.size(), 2u);
  const std::string first = params.keys()[0] + "\n", second = params.keys()[1] + "\n";
  size_t swapped = 0;
  test_util::copy_with_record_edited(dir.file("run.ckpt"), dir.file("swapped.ckpt"), "data.pkl", [&](std::string text) {
    const size_t at = text.find(first + second);
    if (at != std::string::npos) {
      text.replace(at, first.size() + second.size(), second + first);  // (same length: the pickle's stays valid)
      ++swapped;
    }
    return text;
  });
  ASSERT_EQ(swapped, 1u);
  auto resumed = run.options;
  resumed.checkpoint = dir.file("swapped.ckpt");
  EXPECT_ERROR_CONTAINS(train::train(*net, run.data, resumed),
                        "checkpoint " + dir.file("swapped.ckpt") + " holds its momentum buffers in another parameter order");
  EXPECT_EQ(train::train(*net, run.data, run.options).epochs_done, 2);  // the original resumes
}

// Found by fuzz/fuzz_checkpoint.cpp: a parameter group's "params/size" counter larger than the names
// stored makes LibTorch's SGD::load read a name the archive lacks, and TorchScript throws its own
// ObjectAttributeError (no c10::Error), which named neither the file nor the problem.
TEST(Checkpoint, AnOptimizerCountingMoreParametersThanItStoresIsAnErrorNamingTheCheckpoint) {
  TinyRun run;
  test_util::TempDir dir;
  auto net = run.first_epoch(dir.file("run.ckpt"));
  const int64_t params = static_cast<int64_t>(net->parameters().size());
  // Every 8-byte data record holding the parameter count: the parameter group's "params/size".
  const auto edited = test_util::copy_with_record_edited(
      dir.file("run.ckpt"), dir.file("more.ckpt"), "data/", [params](std::string text) {
        int64_t value = 0;
        if (text.size() == sizeof value) std::memcpy(&value, text.data(), sizeof value);
        if (text.size() == sizeof value && value == params) {
          value = params + 512;
          std::memcpy(text.data(), &value, sizeof value);
        }
        return text;
      });
  ASSERT_GT(edited, 0u);
  auto resumed = run.options;
  resumed.checkpoint = dir.file("more.ckpt");
  const std::string message = test_util::error_of([&] { train::train(*net, run.data, resumed); });
  EXPECT_TRUE(test_util::contains(message, "checkpoint " + dir.file("more.ckpt") + " cannot be resumed: ")) << message;
  EXPECT_TRUE(test_util::contains(message, "params/" + std::to_string(params))) << message;
}

// LibTorch keys an optimizer's state by the parameter's TensorImpl: its address as text in 1.13, the
// pointer itself since 2.2. optimizer_state_key gives the key of either kind.
TEST(Checkpoint, OptimizerStateKeysFollowTheOptimizersKeyType) {
  const at::Tensor p = at::zeros({2});
  struct PointerKeyed {
    std::unordered_map<void*, int> map;
    const std::unordered_map<void*, int>& state() const { return map; }
  } by_pointer;
  EXPECT_EQ(train::optimizer_state_key(by_pointer, p), static_cast<void*>(p.unsafeGetTensorImpl()));
  struct TextKeyed {
    std::unordered_map<std::string, int> map;
    const std::unordered_map<std::string, int>& state() const { return map; }
  } by_text;
  std::ostringstream text;
  text << p.unsafeGetTensorImpl();
  EXPECT_EQ(train::optimizer_state_key(by_text, p), text.str());
}

// LibTorch 1.13 writes a parameter's state key as hex text, 2.2 and later as decimal text that it
// reads back with std::stoull: a 1.13 checkpoint is refused there by name, not as a damaged file.
TEST(Checkpoint, HexStateKeysOfLibTorch1AreUnreadableOnlyWherePointersAreKeys) {
  struct PointerKeyed {
    std::unordered_map<void*, int> map;
    const std::unordered_map<void*, int>& state() const { return map; }
  } by_pointer;
  struct TextKeyed {
    std::unordered_map<std::string, int> map;
    const std::unordered_map<std::string, int>& state() const { return map; }
  } by_text;
  const std::vector<std::string> hex = {"0x55d1c8a0b2c0", "0x55d1c8a0b3f0"}, decimal = {"94363092513472", "94363092513776"};
  EXPECT_FALSE(train::optimizer_state_keys_readable(by_pointer, hex));
  EXPECT_FALSE(train::optimizer_state_keys_readable(by_pointer, {decimal[0], hex[1]}));
  EXPECT_TRUE(train::optimizer_state_keys_readable(by_pointer, decimal));
  EXPECT_TRUE(train::optimizer_state_keys_readable(by_pointer, {}));
  EXPECT_TRUE(train::optimizer_state_keys_readable(by_text, hex));
  EXPECT_TRUE(train::optimizer_state_keys_readable(by_text, decimal));
  // This LibTorch's own optimizer, with the keys it writes: readable.
  torch::nn::Linear linear(2, 1);
  torch::optim::SGD sgd(linear->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  linear(torch::ones({1, 2})).sum().backward();
  sgd.step();
  torch::serialize::OutputArchive out;
  sgd.save(out);
  std::ostringstream bytes;
  out.save_to(bytes);
  torch::serialize::InputArchive in, states;
  std::istringstream read(bytes.str());
  in.load_from(read);
  ASSERT_TRUE(in.try_read("state", states));
  EXPECT_EQ(states.keys().size(), 2u);
  EXPECT_TRUE(train::optimizer_state_keys_readable(sgd, states.keys()));
}

// A resume says when the CPU or kernels that wrote its checkpoint may differ from this run's, and
// nothing where they are the same (the README promises an uninterrupted run's weights only then).
TEST(Checkpoint, ResumeNoteSaysWhenTheKernelsMayDiffer) {
  const std::string now = describe(this_cpu());
  EXPECT_EQ(train::resume_kernels_note("c.ckpt", to_json(this_cpu()).dump()), "");
  CpuDescription other = this_cpu();
  other.kernel_settings.emplace_back("ONEDNN_MAX_CPU_ISA", "AVX2");
  EXPECT_EQ(train::resume_kernels_note("c.ckpt", to_json(other).dump()),
            "note: checkpoint c.ckpt was written on another CPU or with other kernels (" +
                describe(cpu_from_json(to_json(other))) +
                ") than this run's (" + now + "): the run continues, but its float sums may round otherwise, so "
                "it need not end with the weights of an uninterrupted run");
  const std::string none = train::resume_kernels_note("c.ckpt", "");
  EXPECT_EQ(none.rfind("note: checkpoint c.ckpt records no CPU (written before 2026-12-06): if it was written on "
                      "another CPU or with other kernels than this run's (" + now + "), the run continues",
                      0),
            0u)
      << none;
  for (const char* damaged : {"{\"name\": ", "[1, 2]", "\"text\""}) {
    const std::string note = train::resume_kernels_note("c.ckpt", damaged);
    EXPECT_EQ(note.rfind("note: checkpoint c.ckpt records its CPU in a form that does not parse: ", 0), 0u) << note;
  }
}
