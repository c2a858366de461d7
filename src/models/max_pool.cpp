// The networks' 2x2 max pooling: our CPU kernels (src/kernels/cpu/max_pool_cpu.cpp), with a
// gradient of their own when one is recorded, ATen's for everything else.
#include "bitrobust/models/max_pool.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <vector>

#include "bitrobust/models/max_pool_kernels.h"
#include "bitrobust/models/models.h"

namespace bitrobust::models {
namespace {

std::vector<int64_t> pooled_shape(const at::Tensor& x) {
  std::vector<int64_t> shape = x.sizes().vec();
  shape[shape.size() - 2] /= 2;
  shape[shape.size() - 1] /= 2;
  return shape;
}

int64_t planes_of(const at::Tensor& x) { return x.numel() / (x.size(-2) * x.size(-1)); }

// Saves the positions of the maxima (one byte per output) where ATen saves the input and int64
// argmax indices (eight bytes per output and the input's four per element).
class MaxPool2x2Function : public torch::autograd::Function<MaxPool2x2Function> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x) {
    at::Tensor y = at::empty(pooled_shape(x), x.options());
    at::Tensor positions = at::empty(pooled_shape(x), x.options().dtype(at::kByte));
    kernels::max_pool2x2_with_positions_cpu(x.data_ptr<float>(), planes_of(x), x.size(-2), x.size(-1),
                                            y.data_ptr<float>(), positions.data_ptr<uint8_t>());
    ctx->save_for_backward({positions});
    ctx->saved_data["input_shape"] = x.sizes().vec();
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const at::Tensor positions = ctx->get_saved_variables()[0];
    const std::vector<int64_t> input_shape = ctx->saved_data["input_shape"].toIntVector();
    const int64_t height = input_shape[input_shape.size() - 2], width = input_shape[input_shape.size() - 1];
    const int64_t planes = positions.numel() / ((height / 2) * (width / 2));
    // Grad mode is on in a backward pass exactly when it builds a graph (create_graph): the gradient
    // is then formed from ATen ops, which record how it depends on grad_y, with the same float
    // operations as the kernel (0 + grad_y at each position).
    if (at::GradMode::is_enabled()) {
      return {gradient_from_aten_ops(grad_outputs[0], positions, input_shape, planes, height, width)};
    }
    const at::Tensor grad_y = grad_outputs[0].contiguous();
    at::Tensor grad_x = at::empty(input_shape, grad_y.options());
    kernels::max_pool2x2_backward_cpu(grad_y.data_ptr<float>(), positions.data_ptr<uint8_t>(), planes, height, width,
                                      grad_x.data_ptr<float>());
    return {grad_x};
  }

 private:
  static at::Tensor gradient_from_aten_ops(const at::Tensor& grad_y, const at::Tensor& positions,
                                           const std::vector<int64_t>& input_shape, int64_t planes, int64_t height,
                                           int64_t width) {
    const int64_t out_height = height / 2, out_width = width / 2, outputs = out_height * out_width;
    const auto index_options = positions.options().dtype(at::kLong);
    // Flat index in its plane of each window's top-left element, then of the position taken.
    const at::Tensor window = (at::arange(out_height, index_options).view({out_height, 1}) * (2 * width) +
                               at::arange(out_width, index_options).view({1, out_width}) * 2)
                                  .view({1, outputs});
    const at::Tensor position = positions.reshape({planes, outputs}).to(at::kLong);
    const at::Tensor lower = position.ge(2).to(at::kLong);
    const at::Tensor index = window + lower * width + (position - lower * 2);
    return at::zeros({planes, height * width}, grad_y.options())
        .scatter_add(1, index, grad_y.reshape({planes, outputs}))
        .view(input_shape);
  }
};

}  // namespace

bool max_pool2x2_uses_own_kernels(const at::Tensor& x) {
  // (is_contiguous throws for opaque layouts such as MKLDNN's, which ATen's pooling takes.)
  if (!(fused_inference_enabled() && x.defined() && x.is_cpu() && x.layout() == at::kStrided)) return false;
  // bf16 only where no gradient is recorded: MaxPool2x2Function's kernels are float's.
  const bool inference = !(at::GradMode::is_enabled() && x.requires_grad());
  const bool bf16_inference = x.scalar_type() == at::kBFloat16 && inference;
  // Channels last likewise only where no gradient is recorded: MaxPool2x2Function's are NCHW.
  return (x.scalar_type() == at::kFloat || bf16_inference) && (x.dim() == 3 || x.dim() == 4) && x.size(-2) >= 2 &&
         x.size(-1) >= 2 && x.numel() > 0 && (x.is_contiguous() || (inference && is_channels_last(x)));
}

at::Tensor max_pool2x2(const at::Tensor& x) {
  if (!max_pool2x2_uses_own_kernels(x)) return at::max_pool2d(x, {2, 2});
  if (at::GradMode::is_enabled() && x.requires_grad()) return MaxPool2x2Function::apply(x);
  if (is_channels_last(x)) {  // as ATen's pooling does, the output keeps the input's layout
    at::Tensor y = at::empty(pooled_shape(x), x.options().memory_format(at::MemoryFormat::ChannelsLast));
    if (x.scalar_type() == at::kBFloat16) {
      kernels::max_pool2x2_channels_last_bf16_cpu(reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>()),
                                                  x.size(0), x.size(1), x.size(2), x.size(3),
                                                  reinterpret_cast<uint16_t*>(y.data_ptr<at::BFloat16>()));
    } else {
      kernels::max_pool2x2_channels_last_cpu(x.data_ptr<float>(), x.size(0), x.size(1), x.size(2), x.size(3),
                                             y.data_ptr<float>());
    }
    return y;
  }
  at::Tensor y = at::empty(pooled_shape(x), x.options());
  if (x.scalar_type() == at::kBFloat16) {
    // (c10::BFloat16 elements, the layout the kernel reads as uint16_t.)
    kernels::max_pool2x2_bf16_cpu(reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>()), planes_of(x),
                                  x.size(-2), x.size(-1), reinterpret_cast<uint16_t*>(y.data_ptr<at::BFloat16>()));
    return y;
  }
  kernels::max_pool2x2_cpu(x.data_ptr<float>(), planes_of(x), x.size(-2), x.size(-1), y.data_ptr<float>());
  return y;
}

}  // namespace bitrobust::models
