#include "bitrobust/eval/evaluate.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <chrono>

#include "bitrobust/common/error.h"

namespace bitrobust::eval {

EvalResult evaluate(models::Classifier& net, const data::Dataset& data, int64_t batch_size) {
  BR_CHECK(batch_size > 0, "--batch must be positive, got ", batch_size);
  BR_CHECK(data.size() > 0, "data set ", data.name, " (", data.split, ") is empty");
  const auto start = std::chrono::steady_clock::now();
  const at::Device device = data.images.device();
  net.to(device);
  net.eval();
  torch::NoGradGuard no_grad;
  const data::Normalization norm = data::normalization_for(data.name);
  const int64_t n = data.size();
  EvalResult result;
  result.examples = n;
  result.correct = at::empty({n}, at::TensorOptions().dtype(at::kBool).device(device));
  // A bf16 network (eval/precision.h) takes bf16 inputs; batches are made in float32.
  const std::vector<at::Tensor> params = net.parameters();
  const at::ScalarType dtype = params.empty() ? at::kFloat : params.front().scalar_type();
  const at::Tensor all = at::arange(n, at::TensorOptions().dtype(at::kLong).device(device));
  for (int64_t begin = 0; begin < n; begin += batch_size) {
    const int64_t end = std::min(n, begin + batch_size);
    const at::Tensor idx = all.slice(0, begin, end);
    at::Tensor x = data::make_batch(data, idx, norm, nullptr, 0, 0);
    if (x.scalar_type() != dtype) x = x.to(dtype);
    const at::Tensor logits = net.forward(x);
    BR_CHECK(logits.size(1) == data.num_classes, "the model predicts ", logits.size(1), " classes but data set ",
             data.name, " has ", data.num_classes);
    result.correct.slice(0, begin, end).copy_(logits.argmax(1).eq(data.labels.slice(0, begin, end)));
  }
  result.error = error_fraction(result.correct.logical_not());
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

double error_fraction(const at::Tensor& wrong) {
  BR_CHECK(wrong.numel() > 0, "error_fraction: no examples");
  return static_cast<double>(wrong.sum().item<int64_t>()) / static_cast<double>(wrong.numel());
}

}  // namespace bitrobust::eval
