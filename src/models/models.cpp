#include "bitrobust/models/models.h"

#include <torch/nn/init.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <atomic>

#include "bitrobust/common/error.h"
#include "bitrobust/models/group_norm_relu.h"
#include "bitrobust/models/max_pool.h"

namespace bitrobust::models {

namespace {

std::atomic<bool> fused_inference{true};
std::atomic<bool> channels_last_inference{true};
std::atomic<ConvBiasFusion> conv_bias_fusion_mode{ConvBiasFusion::Cuda};

// Whether the fused GroupNorm + ReLU beats eager at::relu(at::group_norm(...)) on the CPU. Measured
// by bench/bench_group_norm_relu.cpp on LeNet's shapes at batch 500 with 2 threads: never slower,
// 1.8-2.4x faster on two of the three, LeNet inference 1.13-1.17x faster (docs/measurements.md).
constexpr bool kFusedFasterOnCpu = true;

constexpr double kNormEps = 1e-5;

// NOTE [Re-parameterized normalization]: weight clipping projects every parameter onto [-W, W];
// a normalization scale near 1 would not survive W = 0.1. The re-parameterized layers ("rebn",
// "regn") compute scale = 1 + weight with weight and bias initialised to 0, so every parameter
// stays small (as in the reference).
class NormImpl : public torch::nn::Module {
 public:
  NormImpl(const std::string& kind, int64_t channels) : kind_(kind), channels_(channels) {
    reparam_ = kind == "rebn" || kind == "regn";
    batch_ = kind == "bn" || kind == "rebn";
    weight_ = register_parameter("weight", reparam_ ? at::zeros({channels}) : at::ones({channels}));
    bias_ = register_parameter("bias", at::zeros({channels}));
    if (batch_) {
      running_mean_ = register_buffer("running_mean", at::zeros({channels}));
      running_var_ = register_buffer("running_var", at::ones({channels}));
    }
    groups_ = std::max<int64_t>(1, std::min<int64_t>(32, channels / 2));
    // Found when the network is built, not in LibTorch at the first forward pass.
    BR_CHECK(batch_ || channels % groups_ == 0, "GroupNorm over ", channels, " channels in min(32, ", channels,
             "/2) = ", groups_, " groups (the reference's rule): ", groups_, " does not divide ", channels,
             "; choose a --width (or --widen) whose layers have an even number of channels up to 64 and a "
             "multiple of 32 above");
  }

  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor scale = reparam_ ? weight_ + 1 : weight_;
    if (batch_) {
      return at::batch_norm(x, scale, bias_, running_mean_, running_var_, is_training(), 0.1, kNormEps,
                            at::globalContext().userEnabledCuDNN());
    }
    return at::group_norm(x, groups_, scale, bias_, kNormEps, at::globalContext().userEnabledCuDNN());
  }

  /// relu(forward(x)), fused into one op for GroupNorm at inference (uses_fused_group_norm_relu);
  /// pool2x2: then pooled by max_pool2x2, in the same pass when fused.
  at::Tensor forward_relu(const at::Tensor& x, bool pool2x2) {
    if (batch_ || !uses_fused_group_norm_relu(x, is_training())) {
      at::Tensor y = at::relu(forward(x));
      return pool2x2 ? max_pool2x2(y) : y;
    }
    return group_norm_relu(x, groups_, fused_scale(), bias_, kNormEps, {}, pool2x2);
  }

  /// Whether forward_relu_with_input_bias serves an input like x (see ConvBiasFusion).
  bool takes_input_bias(const at::Tensor& x) const {
    const ConvBiasFusion mode = conv_bias_fusion();
    if (batch_ || mode == ConvBiasFusion::Never || (mode == ConvBiasFusion::Cuda && !x.is_cuda())) return false;
    return uses_fused_group_norm_relu(x, is_training());
  }
  /// relu(forward(x + input_bias)), input_bias per channel, pooled as forward_relu pools; only
  /// where takes_input_bias(x).
  at::Tensor forward_relu_with_input_bias(const at::Tensor& x, const at::Tensor& input_bias, bool pool2x2) {
    return group_norm_relu(x, groups_, fused_scale(), bias_, kNormEps, input_bias, pool2x2);
  }

 private:
  /// The scale the fused op takes: float32 (a bf16 network's 1 + weight formed in float, unrounded).
  at::Tensor fused_scale() const {
    const at::Tensor weight = weight_.to(at::kFloat);
    return reparam_ ? weight + 1 : weight;
  }

  std::string kind_;
  int64_t channels_;
  bool reparam_ = false, batch_ = false;
  int64_t groups_ = 1;
  at::Tensor weight_, bias_, running_mean_, running_var_;
};
TORCH_MODULE(Norm);

/// Normalization followed by ReLU, or just ReLU for norm = "none".
class NormReluImpl : public torch::nn::Module {
 public:
  NormReluImpl(const std::string& kind, int64_t channels) {
    if (kind != "none") norm_ = register_module("norm", Norm(kind, channels));
  }
  /// pool2x2: max_pool2x2 of the result (bitrobust/models/max_pool.h), in the same pass where the
  /// GroupNorm is fused.
  at::Tensor forward(const at::Tensor& x, bool pool2x2 = false) {
    if (norm_) return norm_->forward_relu(x, pool2x2);
    return pool2x2 ? max_pool2x2(at::relu(x)) : at::relu(x);
  }

  /// forward(conv(x), pool2x2). Where the fused GroupNorm takes the convolution's bias
  /// (ConvBiasFusion), the convolution runs without it: the same cuDNN call, minus ATen's separate
  /// bias pass.
  at::Tensor forward_after(torch::nn::Conv2d& conv, const at::Tensor& x, bool pool2x2 = false) {
    if (!norm_ || !conv->bias.defined() || !norm_->takes_input_bias(x)) return forward(conv->forward(x), pool2x2);
    // The arguments torch::nn::Conv2d passes; padding as conv() below builds it (kernel / 2, zeros).
    const auto& o = conv->options;
    const int64_t stride = (*o.stride())[0], dilation = (*o.dilation())[0], pad = conv->weight.size(2) / 2;
    return norm_->forward_relu_with_input_bias(
        at::conv2d(x, conv->weight, {}, {stride, stride}, {pad, pad}, {dilation, dilation}, o.groups()), conv->bias,
        pool2x2);
  }

 private:
  Norm norm_{nullptr};
};
TORCH_MODULE(NormRelu);

// Square kernels, equal strides and zero padding of kernel / 2: NormRelu::forward_after relies on it.
torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, bool bias = true) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2).bias(bias));
}

class MLP : public Classifier {
 public:
  explicit MLP(const ModelSpec& s) {
    int64_t in = s.in_channels * s.height * s.width;
    const std::vector<int64_t> units = s.units.empty() ? std::vector<int64_t>{1024, 1024} : s.units;
    for (size_t i = 0; i < units.size(); ++i) {
      hidden_.push_back(register_module("fc" + std::to_string(i + 1), torch::nn::Linear(in, units[i])));
      acts_.push_back(register_module("act" + std::to_string(i + 1), NormRelu(s.norm, units[i])));
      in = units[i];
    }
    out_ = register_module("fc_out", torch::nn::Linear(in, s.num_classes));
  }
  at::Tensor forward(at::Tensor x) override {
    x = x.flatten(1);
    for (size_t i = 0; i < hidden_.size(); ++i) x = acts_[i]->forward(hidden_[i]->forward(x));
    return out_->forward(x);
  }

 private:
  std::vector<torch::nn::Linear> hidden_;
  std::vector<NormRelu> acts_;
  torch::nn::Linear out_{nullptr};
};

class LeNet : public Classifier {
 public:
  explicit LeNet(const ModelSpec& s) {
    const int64_t c = s.channels > 0 ? s.channels : 32;
    conv1_ = register_module("conv1", conv(s.in_channels, c, 5));
    act1_ = register_module("act1", NormRelu(s.norm, c));
    conv2_ = register_module("conv2", conv(c, 2 * c, 5));
    act2_ = register_module("act2", NormRelu(s.norm, 2 * c));
    const int64_t flat = 2 * c * (s.height / 4) * (s.width / 4);
    fc1_ = register_module("fc1", torch::nn::Linear(flat, 256));
    act3_ = register_module("act3", NormRelu(s.norm, 256));
    fc2_ = register_module("fc2", torch::nn::Linear(256, s.num_classes));
  }
  at::Tensor forward(at::Tensor x) override {
    x = act1_->forward_after(conv1_, x, /*pool2x2=*/true);
    x = act2_->forward_after(conv2_, x, /*pool2x2=*/true);
    x = act3_->forward(fc1_->forward(x.flatten(1)));
    return fc2_->forward(x);
  }

 private:
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
  NormRelu act1_{nullptr}, act2_{nullptr}, act3_{nullptr};
};

// SimpleNet (Hasanpour et al.) as in the reference; see ../shared/REFERENCE.md (beside the checkout)
// for the layer table. (Also what ModelSpec::validate sizes the network by.)
struct SimpleNetLayer {
  int64_t out;
  int64_t kernel;
  bool pool;
};
std::vector<SimpleNetLayer> simplenet_layers(const ModelSpec& s) {
  const int64_t c = s.channels > 0 ? s.channels : 64;
  std::vector<SimpleNetLayer> layers = {{c, 3, false},     {2 * c, 3, false}, {2 * c, 3, false},
                                        {2 * c, 3, true},  {2 * c, 3, false}, {2 * c, 3, false},
                                        {4 * c, 3, true},  {4 * c, 3, false}, {4 * c, 3, true},
                                        {8 * c, 3, true},  {32 * c, 1, false}, {4 * c, 1, true},
                                        {4 * c, 3, false}};
  if (s.height <= 28) {  // 28x28 variant: conv 8 widens to 8c, convs 9-10 dropped
    layers[7].out = 8 * c;
    layers.erase(layers.begin() + 8, layers.begin() + 10);
  }
  return layers;
}

class SimpleNet : public Classifier {
 public:
  explicit SimpleNet(const ModelSpec& s) {
    const std::vector<SimpleNetLayer> layers = simplenet_layers(s);
    int64_t in = s.in_channels;
    for (size_t i = 0; i < layers.size(); ++i) {
      const std::string id = std::to_string(i + 1);
      convs_.push_back(register_module("conv" + id, conv(in, layers[i].out, layers[i].kernel)));
      acts_.push_back(register_module("act" + id, NormRelu(s.norm, layers[i].out)));
      pools_.push_back(layers[i].pool);
      in = layers[i].out;
    }
    fc_ = register_module("fc", torch::nn::Linear(in, s.num_classes));
  }
  bool prefers_channels_last() const override { return true; }
  at::Tensor forward(at::Tensor x) override {
    // (An input of one channel, MNIST's, is NCHW and channels-last alike, so the network stays
    // NCHW: converting at the second layer instead gained nothing measurable on Fashion-MNIST.)
    if (runs_channels_last(x, is_training())) x = x.contiguous(at::MemoryFormat::ChannelsLast);
    for (size_t i = 0; i < convs_.size(); ++i) {
      x = acts_[i]->forward_after(convs_[i], x, pools_[i]);
    }
    x = at::amax(x, {2, 3});
    return fc_->forward(x);
  }

 private:
  std::vector<torch::nn::Conv2d> convs_;
  std::vector<NormRelu> acts_;
  std::vector<bool> pools_;
  torch::nn::Linear fc_{nullptr};
};

/// Pre-activation residual block (He et al. 2016), used by WRN and ResNet-20.
class PreActBlockImpl : public torch::nn::Module {
 public:
  PreActBlockImpl(const std::string& norm, int64_t in, int64_t out, int64_t stride) {
    act1_ = register_module("act1", NormRelu(norm, in));
    conv1_ = register_module("conv1", conv(in, out, 3, stride));
    act2_ = register_module("act2", NormRelu(norm, out));
    conv2_ = register_module("conv2", conv(out, out, 3));
    if (in != out || stride != 1) shortcut_ = register_module("shortcut", conv(in, out, 1, stride));
  }
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor a = act1_->forward(x);
    at::Tensor y = conv2_->forward(act2_->forward_after(conv1_, a));
    return y + (shortcut_ ? shortcut_->forward(a) : x);
  }

 private:
  NormRelu act1_{nullptr}, act2_{nullptr};
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, shortcut_{nullptr};
};
TORCH_MODULE(PreActBlock);

/// WRN's and ResNet-20's stem width, the widths of their three groups, and blocks per group.
struct ResidualLayout {
  std::vector<int64_t> widths;
  int64_t blocks_per_group;
};
ResidualLayout residual_layout(const ModelSpec& s) {
  const int64_t base = s.channels > 0 ? s.channels : 16;
  if (s.arch == "wrn") {
    const int64_t depth = s.depth > 0 ? s.depth : 28, k = s.widen > 0 ? s.widen : 10;
    return {{base, base * k, 2 * base * k, 4 * base * k}, (depth - 4) / 6};
  }
  return {{base, base, 2 * base, 4 * base}, 3};  // resnet20
}

class ResidualNet : public Classifier {
 public:
  explicit ResidualNet(const ModelSpec& s) {
    const ResidualLayout layout = residual_layout(s);
    const std::vector<int64_t>& widths = layout.widths;
    stem_ = register_module("conv1", conv(s.in_channels, widths[0], 3));
    int64_t in = widths[0];
    for (size_t g = 1; g < widths.size(); ++g) {
      for (int64_t b = 0; b < layout.blocks_per_group; ++b) {
        const int64_t stride = (g > 1 && b == 0) ? 2 : 1;
        blocks_.push_back(register_module(
            "block" + std::to_string(g) + "_" + std::to_string(b + 1), PreActBlock(s.norm, in, widths[g], stride)));
        in = widths[g];
      }
    }
    act_ = register_module("act", NormRelu(s.norm, in));
    fc_ = register_module("fc", torch::nn::Linear(in, s.num_classes));
  }
  bool prefers_channels_last() const override { return true; }
  at::Tensor forward(at::Tensor x) override {
    if (runs_channels_last(x, is_training())) x = x.contiguous(at::MemoryFormat::ChannelsLast);  // (see SimpleNet)
    x = stem_->forward(x);
    for (auto& block : blocks_) x = block->forward(x);
    x = act_->forward(x).mean({2, 3});
    return fc_->forward(x);
  }

 private:
  torch::nn::Conv2d stem_{nullptr};
  std::vector<PreActBlock> blocks_;
  NormRelu act_{nullptr};
  torch::nn::Linear fc_{nullptr};
};

const std::vector<std::string>& arch_list() {
  static const std::vector<std::string> names = {"mlp", "lenet", "simplenet", "wrn", "resnet20"};
  return names;
}
const std::vector<std::string>& norm_list() {
  static const std::vector<std::string> names = {"none", "bn", "gn", "rebn", "regn"};
  return names;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

}  // namespace

std::vector<std::string> architecture_names() { return arch_list(); }
std::vector<std::string> normalization_names() { return norm_list(); }

nlohmann::json ModelSpec::to_json() const {
  return {{"arch", arch},   {"norm", norm},         {"in_channels", in_channels},
          {"height", height}, {"width", width},     {"num_classes", num_classes},
          {"channels", channels}, {"depth", depth}, {"widen", widen}, {"units", units}};
}

ModelSpec ModelSpec::from_json(const nlohmann::json& j) {
  ModelSpec s;
  // (The JSON library would read 4.7 as 4: sizes must be integers in the file, not become them.)
  const auto integer = [&j](const char* key, bool required) -> int64_t {
    if (!j.contains(key) && !required) return 0;
    BR_CHECK(j.contains(key), "model description: no '", key, "'");
    BR_CHECK(j[key].is_number_integer(), "model description: '", key, "' must be an integer, got ", j[key].dump());
    return j[key].get<int64_t>();
  };
  try {
    BR_CHECK(j.is_object(), "model description is not a JSON object");
    s.arch = j.at("arch").get<std::string>();
    s.norm = j.at("norm").get<std::string>();
    s.in_channels = integer("in_channels", true);
    s.height = integer("height", true);
    s.width = integer("width", true);
    s.num_classes = integer("num_classes", true);
    s.channels = integer("channels", false);
    s.depth = integer("depth", false);
    s.widen = integer("widen", false);
    if (j.contains("units")) {
      BR_CHECK(j["units"].is_array(), "model description: 'units' must be a list of integers");
      for (const nlohmann::json& u : j["units"]) {
        BR_CHECK(u.is_number_integer(), "model description: 'units' must be a list of integers, got ", j["units"].dump());
        s.units.push_back(u.get<int64_t>());
      }
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error("model description: " + json_error_text(e.what()));
  }
  s.validate();
  return s;
}

void ModelSpec::validate() const {
  const auto& archs = arch_list();
  BR_CHECK(std::find(archs.begin(), archs.end(), arch) != archs.end(), "unknown model '", arch,
           "' (known: ", join(archs), ")");
  const auto& norms = norm_list();
  BR_CHECK(std::find(norms.begin(), norms.end(), norm) != norms.end(), "unknown normalization '", norm,
           "' (known: ", join(norms), ")");
  BR_CHECK(in_channels > 0 && height > 0 && width > 0, "model input shape must be positive, got ",
           in_channels, "x", height, "x", width);
  BR_CHECK(num_classes >= 2, "model needs at least 2 classes, got ", num_classes);
  BR_CHECK(channels >= 0 && channels <= 4096, "model width (channels) must be in 1..4096, got ", channels);
  if (arch == "lenet") BR_CHECK(height >= 4 && width >= 4, "lenet needs inputs of at least 4x4");
  if (arch == "simplenet")
    BR_CHECK(height == width && (height == 28 || height == 32), "simplenet takes 28x28 or 32x32 inputs, got ",
             height, "x", width);
  BR_CHECK(depth >= 0 && depth <= 1000, "WRN depth must be in 0..1000 (0 = 28), got ", depth);
  BR_CHECK(widen >= 0 && widen <= 64, "WRN widen factor must be in 0..64 (0 = 10), got ", widen);
  if (arch == "wrn") {
    const int64_t d = depth > 0 ? depth : 28;
    BR_CHECK(d >= 10 && (d - 4) % 6 == 0, "wrn depth must be 6n+4 (e.g. 16, 22, 28), got ", d);
  }
  for (int64_t u : units) BR_CHECK(u > 0, "mlp hidden units must be positive, got ", u);
  // Hidden units of another architecture would be ignored, and the model shown with them: no command
  // writes them (a description edited by hand; found by a review). (Width and depth are checked by
  // train instead: files written when it ignored them for other architectures still load.)
  BR_CHECK(units.empty() || arch == "mlp", "hidden units (units) are an mlp setting, and the model is a ", arch);
  // Bounds far above any data set here, so that a damaged or edited description is an error rather
  // than an allocation of terabytes (or an overflowing size) when the network is built.
  BR_CHECK(in_channels <= 64 && height <= 4096 && width <= 4096, "model input shape must be at most 64x4096x4096, got ",
           in_channels, "x", height, "x", width);
  BR_CHECK(num_classes <= 1000000, "model has more than 1000000 classes: ", num_classes);
  BR_CHECK(units.size() <= 64, "mlp has more than 64 hidden layers: ", units.size());
  for (int64_t u : units) BR_CHECK(u <= (int64_t{1} << 20), "mlp hidden layer of ", u, " units (at most 2^20)");
  // The weight tensors the description gives, counted in doubles (no overflow) as the constructors
  // below lay them out: the largest, and all of them. The width bounds above alone let a
  // convolutional network through that needs terabytes (wrn at width 4096, widen 64; found by a
  // review), which would be an out-of-memory kill rather than an error.
  double largest = 0, total = 0;
  const auto weight = [&](double elements) {
    largest = std::max(largest, elements);
    total += elements;
  };
  if (arch == "mlp") {
    double in = static_cast<double>(in_channels) * height * width;
    for (int64_t u : units.empty() ? std::vector<int64_t>{1024, 1024} : units) {
      weight(in * u);
      in = static_cast<double>(u);
    }
    weight(in * num_classes);
  } else if (arch == "lenet") {
    const double c = channels > 0 ? channels : 32;
    weight(25.0 * in_channels * c);
    weight(25.0 * c * 2 * c);
    weight(2 * c * (height / 4) * (width / 4) * 256);
    weight(256.0 * num_classes);
  } else if (arch == "simplenet") {
    double in = static_cast<double>(in_channels);
    for (const SimpleNetLayer& layer : simplenet_layers(*this)) {
      weight(static_cast<double>(layer.kernel * layer.kernel) * in * static_cast<double>(layer.out));
      in = static_cast<double>(layer.out);
    }
    weight(in * num_classes);
  } else {  // wrn, resnet20
    const ResidualLayout layout = residual_layout(*this);
    std::vector<double> widths(layout.widths.begin(), layout.widths.end());
    weight(9.0 * in_channels * widths[0]);
    double in = widths[0];
    for (size_t g = 1; g < widths.size(); ++g) {
      for (int64_t b = 0; b < layout.blocks_per_group; ++b) {
        weight(9 * in * widths[g]);
        weight(9 * widths[g] * widths[g]);
        if (in != widths[g] || (g > 1 && b == 0)) weight(in * widths[g]);  // the 1x1 shortcut
        in = widths[g];
      }
    }
    weight(in * num_classes);
  }
  BR_CHECK(largest <= 2147483648.0, "model description gives a weight tensor of ", largest,
           " elements (more than 2^31): input ", in_channels, "x", height, "x", width, ", width ", channels);
  BR_CHECK(total <= 1073741824.0, "model description gives ", total,
           " weights (more than 2^30, 4 GiB as float32, before gradients and momentum): ", arch, " of width ",
           channels, depth > 0 ? ", depth " + std::to_string(depth) : "", widen > 0 ? ", widen " + std::to_string(widen) : "",
           ", input ", in_channels, "x", height, "x", width);
}

std::shared_ptr<Classifier> build_model(const ModelSpec& spec) {
  spec.validate();
  std::shared_ptr<Classifier> net;
  if (spec.arch == "mlp") {
    net = std::make_shared<MLP>(spec);
  } else if (spec.arch == "lenet") {
    net = std::make_shared<LeNet>(spec);
  } else if (spec.arch == "simplenet") {
    net = std::make_shared<SimpleNet>(spec);
  } else {  // wrn, resnet20
    net = std::make_shared<ResidualNet>(spec);
  }
  return net;
}

std::vector<std::string> initialization_names() { return {"torch", "reference"}; }

void initialize(torch::nn::Module& net, const std::string& init) {
  const std::vector<std::string> names = initialization_names();
  BR_CHECK(std::find(names.begin(), names.end(), init) != names.end(), "unknown initialisation '", init,
           "' (known: ", join(names), ")");
  if (init == "torch") return;
  const at::NoGradGuard no_grad;
  auto he_normal = [](at::Tensor& weight, at::Tensor& bias) {
    const int64_t fan_in = weight.numel() / weight.size(0);
    weight.normal_(0.0, std::sqrt(2.0 / static_cast<double>(fan_in)));
    if (bias.defined()) bias.zero_();
  };
  for (const auto& module : net.modules(/*include_self=*/true)) {
    if (auto* conv = module->as<torch::nn::Conv2d>()) {
      he_normal(conv->weight, conv->bias);
    } else if (auto* linear = module->as<torch::nn::Linear>()) {
      he_normal(linear->weight, linear->bias);
    }
  }
}

void set_fused_inference(bool enabled) { fused_inference.store(enabled); }
void set_conv_bias_fusion(ConvBiasFusion mode) { conv_bias_fusion_mode.store(mode); }
ConvBiasFusion conv_bias_fusion() { return conv_bias_fusion_mode.load(); }
bool fused_inference_enabled() { return fused_inference.load(); }
void set_channels_last_inference(bool enabled) { channels_last_inference.store(enabled); }
bool channels_last_inference_enabled() { return channels_last_inference.load(); }

bool is_channels_last(const at::Tensor& x) {
  return x.defined() && x.layout() == at::kStrided && x.dim() == 4 && !x.is_contiguous() &&
         x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

namespace {
bool channels_last_candidate(const at::Tensor& x) {
  return channels_last_inference_enabled() && x.defined() && x.is_cpu() && x.layout() == at::kStrided &&
         x.dim() == 4 && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16);
}
}  // namespace

bool runs_channels_last(const at::Tensor& x, bool training) {
  return !training && !at::GradMode::is_enabled() && channels_last_candidate(x);
}

bool infers_channels_last(const Classifier& net, const at::Tensor& x) {
  return net.prefers_channels_last() && channels_last_candidate(x) && x.size(1) > 1 && x.size(2) * x.size(3) > 1;
}

bool uses_fused_group_norm_relu(const at::Tensor& x, bool training) {
  if (!fused_inference_enabled() || training || at::GradMode::is_enabled()) return false;
  // bf16 on the CPU: eager bf16 GroupNorm took 3x its float time, more than the convolutions
  // (docs/measurements.md, "bf16 inference on the CPU").
  if (x.scalar_type() == at::kBFloat16) return x.is_cpu();
  if (x.scalar_type() != at::kFloat) return false;
  return x.is_cuda() || (x.is_cpu() && kFusedFasterOnCpu);
}

int64_t parameter_count(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

}  // namespace bitrobust::models
