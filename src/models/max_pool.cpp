// The networks' 2x2 max pooling: our CPU kernel for inference (src/kernels/cpu/max_pool_cpu.cpp),
// ATen's otherwise.
#include "bitrobust/models/max_pool.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <vector>

#include "bitrobust/models/max_pool_kernels.h"
#include "bitrobust/models/models.h"

namespace bitrobust::models {

at::Tensor max_pool2x2(const at::Tensor& x) {
  const bool ours = fused_inference_enabled() && x.defined() && x.is_cpu() && x.scalar_type() == at::kFloat &&
                    (x.dim() == 3 || x.dim() == 4) && x.size(-2) >= 2 && x.size(-1) >= 2 && x.numel() > 0 &&
                    x.is_contiguous() &&
                    !(at::GradMode::is_enabled() && x.requires_grad());
  if (!ours) return at::max_pool2d(x, {2, 2});
  std::vector<int64_t> shape = x.sizes().vec();
  const int64_t height = shape[shape.size() - 2], width = shape[shape.size() - 1];
  shape[shape.size() - 2] = height / 2;
  shape[shape.size() - 1] = width / 2;
  at::Tensor y = at::empty(shape, x.options());
  kernels::max_pool2x2_cpu(x.data_ptr<float>(), x.numel() / (height * width), height, width, y.data_ptr<float>());
  return y;
}

}  // namespace bitrobust::models
