// make_batch: validates, then dispatches to the CPU kernel or its CUDA twin (augment_kernels.h).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/stack.h>

#include <cmath>
#include <limits>
#include <string>

#include "bitrobust/common/error.h"
#include "bitrobust/config.h"
#include "bitrobust/data/augment_kernels.h"
#include "bitrobust/data/dataset.h"

#ifdef BITROBUST_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace bitrobust::data {
namespace {

std::string dataset_label(const Dataset& data) {
  return data.name.empty() ? std::string("the data set") : detail::concat("the data set '", data.name, "'");
}

/// Checks that `indices` is a 1-D integer tensor with values in [0, data.size()) and returns it
/// as contiguous int64 on `device`.
at::Tensor checked_indices(const Dataset& data, const at::Tensor& indices, at::Device device, const char* what) {
  BR_CHECK(indices.defined(), what, ": indices are undefined");
  BR_CHECK(indices.dim() == 1, what, ": indices must be 1-D, got ", indices.dim(), " dimensions");
  BR_CHECK(at::isIntegralType(indices.scalar_type(), /*includeBool=*/false), what,
           ": indices must be an integer tensor, got ", indices.scalar_type());
  at::Tensor result = indices.to(at::kLong).contiguous();
  const int64_t n = data.size();
  if (result.numel() > 0) {
    int64_t lowest = 0, highest = 0;
    if (result.device().is_cpu()) {
      const int64_t* values = result.data_ptr<int64_t>();
      lowest = highest = values[0];
      for (int64_t i = 1; i < result.numel(); ++i) {
        lowest = std::min(lowest, values[i]);
        highest = std::max(highest, values[i]);
      }
    } else {
      const at::Tensor bounds = at::stack({result.min(), result.max()}).cpu();  // one device synchronization
      lowest = bounds[0].item<int64_t>();
      highest = bounds[1].item<int64_t>();
    }
    BR_CHECK(lowest >= 0 && highest < n, what, ": index out of range: indices span [", lowest, ", ", highest,
             "] but ", dataset_label(data), " has ", n, " examples");
  }
  return result.to(device).contiguous();
}

}  // namespace

at::Tensor make_batch(const Dataset& data, const at::Tensor& indices, const Normalization& norm,
                      const AugmentOptions* augment, uint64_t seed, uint64_t epoch) {
  BR_CHECK(data.images.defined(), "make_batch: ", dataset_label(data), " has no images");
  BR_CHECK(data.images.dim() == 4 && data.images.scalar_type() == at::kByte, "make_batch: images of ",
           dataset_label(data), " must be uint8 [N, C, H, W], got ", data.images.scalar_type(), " with ",
           data.images.dim(), " dimensions");
  // A non-contiguous set would need a full copy per batch: refuse it rather than be silently slow.
  BR_CHECK(data.images.is_contiguous(), "make_batch: images of ", dataset_label(data),
           " must be contiguous (call .contiguous() once after slicing or permuting the set)");
  const at::Tensor& images = data.images;
  const int64_t channels = data.channels(), height = data.height(), width = data.width();
  BR_CHECK(channels >= 1 && channels <= kernels::kMaxBatchChannels, "make_batch: ", dataset_label(data), " has ",
           channels, " channels; supported: 1..", kernels::kMaxBatchChannels);
  BR_CHECK(height <= std::numeric_limits<int>::max() / 2 && width <= std::numeric_limits<int>::max() / 2,
           "make_batch: images of ", height, "x", width, " are too large");
  BR_CHECK(static_cast<int64_t>(norm.mean.size()) == channels && static_cast<int64_t>(norm.std.size()) == channels,
           "make_batch: the normalization has ", norm.mean.size(), " mean(s) and ", norm.std.size(), " std(s) but ",
           dataset_label(data), " has ", channels, " channel(s)");
  for (int64_t c = 0; c < channels; ++c) {
    BR_CHECK(std::isfinite(norm.mean[c]) && std::isfinite(norm.std[c]) && norm.std[c] > 0.0f,
             "make_batch: normalization of channel ", c, " needs a finite mean and a finite std > 0, got mean ",
             norm.mean[c], ", std ", norm.std[c]);
  }
  kernels::AugmentSpec spec;
  if (augment != nullptr) {
    BR_CHECK(augment->padding >= 0 && augment->padding <= 4096, "make_batch: crop padding must be in 0..4096, got ",
             augment->padding);
    BR_CHECK(augment->cutout >= 0 && augment->cutout <= 1 << 20, "make_batch: cutout size must be in 0..2^20, got ",
             augment->cutout);
    spec.random_crop = augment->random_crop;
    spec.padding = augment->padding;
    spec.horizontal_flip = augment->horizontal_flip;
    spec.cutout = augment->cutout;
    spec.autoaugment = augment->autoaugment;
    BR_CHECK(!augment->autoaugment || channels == 3, "make_batch: AutoAugment needs RGB images, but ",
             dataset_label(data), " has ", channels, " channel(s)");
    if (augment->fill_with_mean) {
      // The reference's int(255 * mean) in float32 (torch.tensor(mean) * 255, then int()).
      for (int64_t c = 0; c < channels; ++c) {
        const float scaled = 255.0f * norm.mean[c];
        spec.fill[c] = static_cast<uint8_t>(scaled <= 0.0f ? 0 : (scaled >= 255.0f ? 255 : static_cast<int>(scaled)));
      }
    }
  }
  const at::Device device = images.device();
#ifndef BITROBUST_WITH_CUDA
  BR_CHECK(!device.is_cuda(), "make_batch: ", dataset_label(data), " is on ", device,
           " but bitrobust was built without CUDA");
#endif
  BR_CHECK(device.is_cpu() || device.is_cuda(), "make_batch: ", dataset_label(data), " is on ", device,
           ", supported devices: cpu, cuda");
  const at::Tensor index = checked_indices(data, indices, device, "make_batch");
  const int64_t batch = index.numel();
  at::Tensor out = at::empty({batch, channels, height, width}, images.options().dtype(at::kFloat));
  if (batch == 0) return out;

  if (device.is_cpu()) {
    kernels::make_batch_cpu(images.data_ptr<uint8_t>(), data.size(), static_cast<int>(channels),
                            static_cast<int>(height), static_cast<int>(width), index.data_ptr<int64_t>(), batch,
                            norm.mean.data(), norm.std.data(), augment != nullptr ? &spec : nullptr, seed, epoch,
                            out.data_ptr<float>());
    return out;
  }
#ifdef BITROBUST_WITH_CUDA
  const c10::cuda::CUDAGuard device_guard(device);
  kernels::make_batch_cuda(images.data_ptr<uint8_t>(), data.size(), static_cast<int>(channels),
                           static_cast<int>(height), static_cast<int>(width), index.data_ptr<int64_t>(), batch,
                           norm.mean.data(), norm.std.data(), augment != nullptr ? &spec : nullptr, seed, epoch,
                           out.data_ptr<float>(), static_cast<void*>(at::cuda::getCurrentCUDAStream().stream()));
#endif
  return out;
}

at::Tensor batch_labels(const Dataset& data, const at::Tensor& labels_indices) {
  BR_CHECK(data.labels.defined(), "batch_labels: ", dataset_label(data), " has no labels");
  const at::Tensor index = checked_indices(data, labels_indices, data.labels.device(), "batch_labels");
  return data.labels.index_select(0, index);
}

}  // namespace bitrobust::data
