#pragma once
// Classifier architectures (MLP, LeNet, SimpleNet, WRN, ResNet-20), each with a choice of
// normalization: SimpleNet as in the reference's layer table; WRN and ResNet-20 with the common
// pre-activation block; MLP and LeNet this project's own small networks. See NOTE [Re-parameterized normalization] in models.cpp.
#include <torch/nn/module.h>

#include <nlohmann/json.hpp>
#include <memory>
#include <string>
#include <vector>

namespace bitrobust::models {

/// What a network is: enough to rebuild it from a model file.
struct ModelSpec {
  std::string arch = "lenet";   ///< mlp | lenet | simplenet | wrn | resnet20
  std::string norm = "gn";      ///< none | bn | gn | rebn | regn
  int64_t in_channels = 1;
  int64_t height = 28;
  int64_t width = 28;
  int64_t num_classes = 10;
  int64_t channels = 0;         ///< base width (0 = the architecture's default)
  int64_t depth = 0;            ///< WRN depth (0 = 28)
  int64_t widen = 0;            ///< WRN widen factor (0 = 10)
  std::vector<int64_t> units;   ///< MLP hidden units (empty = default)

  nlohmann::json to_json() const;
  static ModelSpec from_json(const nlohmann::json& j);
  void validate() const;        ///< throws bitrobust::Error on unknown names or bad sizes
};

std::vector<std::string> architecture_names();
std::vector<std::string> normalization_names();

/// A classifier: images [B, C, H, W] (normalized floats) -> logits [B, classes].
class Classifier : public torch::nn::Module {
 public:
  virtual at::Tensor forward(at::Tensor x) = 0;
  /// Whether the network converts its input to channels-last for inference on the CPU (see
  /// set_channels_last_inference): SimpleNet, WRN and ResNet-20.
  virtual bool prefers_channels_last() const { return false; }
};

/// Builds a freshly initialised network (initialisation draws from torch's global generator:
/// call torch::manual_seed first for reproducibility).
std::shared_ptr<Classifier> build_model(const ModelSpec& spec);

/// Weight initialisations: "torch" keeps LibTorch's defaults (Kaiming uniform with a = sqrt(5),
/// uniform biases), which build_model gives and every result in docs/ used; "reference" is the
/// reference's: every convolution and linear weight from N(0, 2 / fan_in) (Kaiming normal, ReLU
/// gain) and every bias 0. Normalization parameters are left as built.
std::vector<std::string> initialization_names();
/// Applies `init` to a network from build_model (draws from torch's global generator). Throws
/// bitrobust::Error for an unknown name.
void initialize(torch::nn::Module& net, const std::string& init);

int64_t parameter_count(const torch::nn::Module& module);

/// Turns the fused inference path on or off for every network in the process (default on).
/// When on, a GroupNorm layer ("gn", "regn") and its ReLU run as one fused op
/// (bitrobust/models/group_norm_relu.h) in eval mode without gradients, wherever the fused op is
/// the faster one (see uses_fused_group_norm_relu), on the CPU in the same pass as the 2x2 max
/// pooling after it where the network pools, and 2x2 max pooling on the CPU runs our kernels, in
/// training too (bitrobust/models/max_pool.h). Off: eager at::relu(at::group_norm(...)) and
/// at::max_pool2d everywhere, for comparisons. Results agree to rounding (float32: about 1e-6
/// relative; a bf16 network: bf16's rounding, about 4e-3 relative, see uses_fused_group_norm_relu).
/// The pooling's, and its gradients, are equal bit for bit (bf16: NaN's bits aside).
void set_fused_inference(bool enabled);
bool fused_inference_enabled();

/// Whether a GroupNorm + ReLU layer takes the fused path for input x: the switch is on, the module
/// is not training (`training`), grad mode is off, and x is float32 on a CUDA device or (where
/// measured faster, see docs/measurements.md) on the CPU, or bfloat16 on the CPU (a network run in
/// bf16, `eval --precision bf16`: computed in float from the bf16 values, the scale 1 + weight of
/// the re-parameterized norm included, and rounded once; eager bf16 rounds 1 + weight to bf16 first).
bool uses_fused_group_norm_relu(const at::Tensor& x, bool training);

/// Whether x is a 4-D tensor laid out channels-last ([N, H, W, C] in memory) and not also
/// contiguous: the layout channels-last inference runs in (with one channel, or 1 x 1 planes, the
/// two layouts are the same memory and x counts as contiguous).
bool is_channels_last(const at::Tensor& x);

/// Turns channels-last inference on the CPU on or off for every network in the process (default
/// on). When on, SimpleNet, WRN and ResNet-20 convert their input to channels-last in eval mode
/// without gradients on the CPU (float32 or bf16; see runs_channels_last), so that every layer
/// after it runs in that layout: oneDNN's convolutions skip the reorders to and from NCHW
/// (docs/measurements.md, "Channels-last inference on the CPU"), and the fused GroupNorm + ReLU,
/// the 2x2 pooling and ATen's BatchNorm read and write it as it lies. Results agree with NCHW to
/// rounding (the convolutions' sums are ordered differently), not bit for bit. Off: NCHW, for
/// comparisons (BITROBUST_CHANNELS_LAST=0 for the command-line tool). Training (a channels-last
/// SimpleNet with GroupNorm trained at 0.75-0.79x its NCHW speed, ATen's GroupNorm backward being
/// slow in that layout), CUDA (where channels-last was slower, issue 7) and LeNet (its convolutions gained nothing) stay NCHW, and so does a network
/// whose input has one channel (MNIST's: NCHW and channels-last alike).
void set_channels_last_inference(bool enabled);
bool channels_last_inference_enabled();
/// Whether a network that prefers channels-last runs input x so: the switch is on, the module is
/// not training, grad mode is off, and x is a float32 or bfloat16 CPU tensor of 4 dimensions.
bool runs_channels_last(const at::Tensor& x, bool training);
/// Whether `net`'s inference (eval mode, no gradients) on inputs like x runs channels-last: it
/// prefers it, runs_channels_last would hold, and x has more than one channel and value per
/// channel (with one, NCHW and channels-last are the same memory). Results record it
/// (`activations` in eval's JSON): the layouts agree to rounding, not bit for bit.
bool infers_channels_last(const Classifier& net, const at::Tensor& x);

/// Where a convolution followed by a fused GroupNorm + ReLU leaves its bias to the fused op
/// (group_norm_relu's input_bias). On CUDA, ATen adds a convolution's bias in a pass of its own
/// over the whole output after cuDNN; the fused op adds it as it reads, with the same float
/// additions, so outputs are unchanged and one read and one write of every activation are saved.
/// On the CPU oneDNN adds the bias inside the convolution, so there is nothing to save. (A bf16
/// network under Always adds the bias to the bf16-rounded convolution output: close to, not equal
/// to, the convolution's own bias.)
enum class ConvBiasFusion {
  Cuda,    ///< on CUDA only (default)
  Always,  ///< also on the CPU (for tests of the plumbing)
  Never,   ///< the convolution adds its bias (for comparisons)
};
void set_conv_bias_fusion(ConvBiasFusion mode);
ConvBiasFusion conv_bias_fusion();

}  // namespace bitrobust::models
