// The networks' 2x2 max pooling: our CPU kernels (src/kernels/cpu/max_pool_cpu.cpp), with a
// gradient of their own when one is recorded, ATen's for everything else.
#include "bitrobust/models/max_pool.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <vector>

#include "bitrobust/common/error.h"
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
// argmax indices (twelve bytes per output and the input's four per element).
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
    // The gradient below is computed by our kernel, which records no graph of its own.
    BR_CHECK(!at::GradMode::is_enabled(), "max_pool2x2: second derivatives are not supported (a backward pass ",
             "with create_graph); use at::max_pool2d");
    const at::Tensor positions = ctx->get_saved_variables()[0];
    const std::vector<int64_t> input_shape = ctx->saved_data["input_shape"].toIntVector();
    const at::Tensor grad_y = grad_outputs[0].contiguous();
    at::Tensor grad_x = at::empty(input_shape, grad_y.options());
    const int64_t height = input_shape[input_shape.size() - 2], width = input_shape[input_shape.size() - 1];
    kernels::max_pool2x2_backward_cpu(grad_y.data_ptr<float>(), positions.data_ptr<uint8_t>(),
                                      grad_x.numel() / (height * width), height, width, grad_x.data_ptr<float>());
    return {grad_x};
  }
};

}  // namespace

at::Tensor max_pool2x2(const at::Tensor& x) {
  const bool ours = fused_inference_enabled() && x.defined() && x.is_cpu() && x.scalar_type() == at::kFloat &&
                    (x.dim() == 3 || x.dim() == 4) && x.size(-2) >= 2 && x.size(-1) >= 2 && x.numel() > 0 &&
                    x.is_contiguous();
  if (!ours) return at::max_pool2d(x, {2, 2});
  if (at::GradMode::is_enabled() && x.requires_grad()) return MaxPool2x2Function::apply(x);
  at::Tensor y = at::empty(pooled_shape(x), x.options());
  kernels::max_pool2x2_cpu(x.data_ptr<float>(), planes_of(x), x.size(-2), x.size(-1), y.data_ptr<float>());
  return y;
}

}  // namespace bitrobust::models
