// make_batch / batch_labels: the torch-facing entry over the augmentation kernels.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "bitrobust/common/error.h"
#include "bitrobust/config.h"
#include "bitrobust/data/augment_kernels.h"
#include "bitrobust/data/dataset.h"
#include "data/data_files.h"

#ifdef BITROBUST_WITH_CUDA
#include <torch/cuda.h>
#endif

namespace bitrobust::data {
namespace {

Dataset random_dataset(int64_t n, int64_t c, int64_t h, int64_t w, uint64_t seed, const char* name = "cifar10") {
  Dataset data;
  at::Generator generator = at::detail::createCPUGenerator(seed);
  data.images = at::randint(0, 256, {n, c, h, w}, generator, at::kByte);
  data.labels = at::randint(0, 10, {n}, generator, at::kLong);
  data.name = name;
  data.split = "train";
  return data;
}

/// (x / 255 - mean) / std with torch's own elementwise ops.
at::Tensor normalized_with_torch(const at::Tensor& images, const Normalization& norm) {
  const int64_t c = images.size(1);
  const at::Tensor mean = at::tensor(norm.mean).reshape({1, c, 1, 1});
  const at::Tensor std = at::tensor(norm.std).reshape({1, c, 1, 1});
  return (images.to(at::kFloat) / 255.0f - mean) / std;
}

TEST(MakeBatch, WithoutAugmentationEqualsNormalizedGather) {
  const Dataset data = random_dataset(40, 3, 32, 32, 1);
  const Normalization norm = normalization_for("cifar10");
  const at::Tensor indices = at::tensor(std::vector<int64_t>{39, 0, 7, 7, 12});
  const at::Tensor batch = make_batch(data, indices, norm, nullptr, 5, 0);
  EXPECT_EQ(batch.sizes(), (std::vector<int64_t>{5, 3, 32, 32}));
  EXPECT_EQ(batch.scalar_type(), at::kFloat);
  EXPECT_TRUE(batch.is_contiguous());
  const at::Tensor expected = normalized_with_torch(data.images.index_select(0, indices), norm);
  EXPECT_LE((batch - expected).abs().max().item<float>(), 1e-6f);
  // Grey-scale set with its own constants.
  const Dataset grey = random_dataset(10, 1, 28, 28, 2, "mnist");
  const Normalization mnist = normalization_for("mnist");
  const at::Tensor all = at::arange(10, at::kLong);
  EXPECT_LE((make_batch(grey, all, mnist, nullptr, 0, 0) - normalized_with_torch(grey.images, mnist)).abs().max().item<float>(),
            1e-6f);
}

TEST(MakeBatch, MatchesTheKernelAndIgnoresBatchComposition) {
  const Dataset data = random_dataset(30, 3, 32, 32, 3);
  const Normalization norm = normalization_for("cifar10");
  const AugmentOptions augment = default_augmentation("cifar10");
  const at::Tensor indices = at::tensor(std::vector<int64_t>{4, 29, 4, 0, 13});
  const at::Tensor batch = make_batch(data, indices, norm, &augment, 77, 3);
  for (int64_t b = 0; b < indices.numel(); ++b) {
    const at::Tensor alone = make_batch(data, indices.slice(0, b, b + 1), norm, &augment, 77, 3);
    EXPECT_TRUE(at::equal(alone[0], batch[b])) << "position " << b;
  }
  // The same example twice in one batch gets the same augmentation (it is keyed by the index).
  EXPECT_TRUE(at::equal(batch[0], batch[2]));
  // Another epoch or seed changes the augmentation; the non-augmented batch differs from it.
  EXPECT_FALSE(at::equal(batch, make_batch(data, indices, norm, &augment, 77, 4)));
  EXPECT_FALSE(at::equal(batch, make_batch(data, indices, norm, &augment, 78, 3)));
  EXPECT_FALSE(at::equal(batch, make_batch(data, indices, norm, nullptr, 77, 3)));
  // Same as the kernel called directly, with the reference's fill int(255 * mean).
  kernels::AugmentSpec spec;
  spec.random_crop = true;
  spec.padding = 4;
  spec.horizontal_flip = true;
  spec.cutout = 16;
  spec.autoaugment = true;
  const uint8_t mean_fill[3] = {125, 122, 113};
  std::copy(mean_fill, mean_fill + 3, spec.fill);
  at::Tensor direct = at::empty_like(batch);
  kernels::make_batch_cpu(data.images.data_ptr<uint8_t>(), 30, 3, 32, 32, indices.data_ptr<int64_t>(), 5,
                          norm.mean.data(), norm.std.data(), &spec, 77, 3, direct.data_ptr<float>());
  EXPECT_TRUE(at::equal(direct, batch));
  // Without AutoAugment and the mean fill, padding pixels are -mean/std: an image of 255s cropped
  // at offset (dy, dx) shows them.
  Dataset white = data;
  white.images = at::full({1, 3, 32, 32}, 255, at::kByte);
  AugmentOptions crop_only;
  crop_only.random_crop = true;
  for (uint64_t epoch = 0; epoch < 20; ++epoch) {
    const at::Tensor out = make_batch(white, at::zeros({1}, at::kLong), norm, &crop_only, 1, epoch);
    const kernels::ExampleAugmentation a = kernels::draw_augmentation(spec, 1, epoch, 0, 32, 32);
    for (int c = 0; c < 3; ++c) {
      const float padded = -norm.mean[c] / norm.std[c];
      const at::Tensor is_padded = (out[0][c] - padded).abs() < 1e-5;
      const int64_t expected = std::abs(a.dy) * 32 + std::abs(a.dx) * 32 - std::abs(a.dy) * std::abs(a.dx);
      EXPECT_EQ(is_padded.sum().item<int64_t>(), expected) << "epoch " << epoch << " dy " << a.dy << " dx " << a.dx;
    }
  }
}

TEST(MakeBatch, AcceptsAnyIntegerIndicesAndEmptyBatches) {
  const Dataset data = random_dataset(8, 3, 32, 32, 4);
  const Normalization norm = normalization_for("cifar10");
  const at::Tensor as_long = at::tensor(std::vector<int64_t>{1, 5});
  EXPECT_TRUE(at::equal(make_batch(data, as_long.to(at::kInt), norm, nullptr, 0, 0),
                        make_batch(data, as_long, norm, nullptr, 0, 0)));
  const at::Tensor empty = make_batch(data, at::empty({0}, at::kLong), norm, nullptr, 0, 0);
  EXPECT_EQ(empty.sizes(), (std::vector<int64_t>{0, 3, 32, 32}));
  // A non-contiguous index view.
  const at::Tensor strided = at::tensor(std::vector<int64_t>{7, 0, 6, 0, 5}).slice(0, 0, 5, 2);
  EXPECT_TRUE(at::equal(make_batch(data, strided, norm, nullptr, 0, 0),
                        make_batch(data, at::tensor(std::vector<int64_t>{7, 6, 5}), norm, nullptr, 0, 0)));
}

TEST(MakeBatch, RejectsBadInput) {
  const Dataset data = random_dataset(8, 3, 32, 32, 5);
  const Normalization norm = normalization_for("cifar10");
  EXPECT_ERROR_MENTIONS(make_batch(data, at::tensor(std::vector<int64_t>{0, 8}), norm, nullptr, 0, 0),
                        "index out of range", "[0, 8]", "'cifar10' has 8 examples");
  EXPECT_ERROR_MENTIONS(make_batch(data, at::tensor(std::vector<int64_t>{-1}), norm, nullptr, 0, 0), "out of range");
  EXPECT_ERROR_MENTIONS(make_batch(data, at::zeros({2, 2}, at::kLong), norm, nullptr, 0, 0), "1-D");
  EXPECT_ERROR_MENTIONS(make_batch(data, at::zeros({2}, at::kFloat), norm, nullptr, 0, 0), "integer");
  EXPECT_ERROR_MENTIONS(make_batch(data, at::Tensor(), norm, nullptr, 0, 0), "undefined");
  EXPECT_ERROR_MENTIONS(make_batch(data, at::zeros({1}, at::kLong), normalization_for("mnist"), nullptr, 0, 0),
                        "1 mean(s)", "3 channel(s)");
  Normalization zero_std = norm;
  zero_std.std[1] = 0.0f;
  EXPECT_ERROR_MENTIONS(make_batch(data, at::zeros({1}, at::kLong), zero_std, nullptr, 0, 0), "channel 1", "std > 0");
  AugmentOptions negative;
  negative.cutout = -2;
  EXPECT_ERROR_MENTIONS(make_batch(data, at::zeros({1}, at::kLong), norm, &negative, 0, 0), "cutout", "-2");
  AugmentOptions autoaugment;
  autoaugment.autoaugment = true;
  const Dataset grey = random_dataset(4, 1, 28, 28, 6, "mnist");
  EXPECT_ERROR_MENTIONS(make_batch(grey, at::zeros({1}, at::kLong), normalization_for("mnist"), &autoaugment, 0, 0),
                        "AutoAugment needs RGB", "1 channel");
  Dataset floats = data;
  floats.images = data.images.to(at::kFloat);
  EXPECT_ERROR_MENTIONS(make_batch(floats, at::zeros({1}, at::kLong), norm, nullptr, 0, 0), "uint8");
  Dataset transposed = data;
  transposed.images = data.images.transpose(2, 3);
  EXPECT_ERROR_MENTIONS(make_batch(transposed, at::zeros({1}, at::kLong), norm, nullptr, 0, 0), "contiguous");
  Dataset meta = data;
  meta.images = at::empty({8, 3, 32, 32}, at::TensorOptions().dtype(at::kByte).device(at::kMeta));
  EXPECT_ERROR_MENTIONS(make_batch(meta, at::zeros({1}, at::kLong), norm, nullptr, 0, 0), "meta", "cpu, cuda");
}

TEST(BatchLabels, GathersAndChecks) {
  const Dataset data = random_dataset(8, 3, 32, 32, 6);
  const at::Tensor indices = at::tensor(std::vector<int64_t>{3, 3, 0});
  EXPECT_TRUE(at::equal(batch_labels(data, indices), data.labels.index_select(0, indices)));
  EXPECT_ERROR_MENTIONS(batch_labels(data, at::tensor(std::vector<int64_t>{9})), "batch_labels", "out of range");
}

#ifdef BITROBUST_WITH_CUDA
TEST(MakeBatchCuda, BitIdenticalToCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  Dataset cpu = random_dataset(500, 3, 32, 32, 7);
  // Besides full-range noise: narrow ranges (autocontrast's scaling, equalize's steps) and constant
  // images (their identity tables).
  cpu.images.slice(0, 0, 150).copy_(at::randint(60, 190, {150, 3, 32, 32}, at::kByte));
  for (int64_t i = 150; i < 170; ++i) cpu.images[i].fill_(static_cast<int64_t>(i));
  const Dataset gpu = cpu.to(at::Device(at::kCUDA, 0));
  const Normalization norm = normalization_for("cifar10");
  const AugmentOptions augment = default_augmentation("cifar10");
  const at::Tensor indices = at::randperm(500, at::kLong).slice(0, 0, 400);
  AugmentOptions without_autoaugment = augment;
  without_autoaugment.autoaugment = false;
  for (const AugmentOptions* options :
       {static_cast<const AugmentOptions*>(nullptr), static_cast<const AugmentOptions*>(&without_autoaugment), &augment}) {
    for (uint64_t epoch = 2; epoch < 5; ++epoch) {
      const at::Tensor expected = make_batch(cpu, indices, norm, options, 11, epoch);
      const at::Tensor from_cpu_indices = make_batch(gpu, indices, norm, options, 11, epoch);
      const at::Tensor from_gpu_indices = make_batch(gpu, indices.to(gpu.images.device()), norm, options, 11, epoch);
      EXPECT_TRUE(from_cpu_indices.is_cuda());
      EXPECT_TRUE(at::equal(expected, from_cpu_indices.cpu())) << "epoch " << epoch;
      EXPECT_TRUE(at::equal(expected, from_gpu_indices.cpu())) << "epoch " << epoch;
    }
  }
  // AutoAugment on CUDA keeps an image in shared memory: larger images are refused clearly.
  const Dataset big = random_dataset(2, 3, 65, 64, 9).to(at::Device(at::kCUDA, 0));
  EXPECT_ERROR_MENTIONS(make_batch(big, at::zeros({1}, at::kLong), norm, &augment, 0, 0), "AutoAugment on CUDA",
                        "65x64");
  const Dataset mnist_like = random_dataset(50, 1, 28, 28, 8, "mnist");
  const Normalization mnist = normalization_for("mnist");
  const at::Tensor all = at::arange(50, at::kLong);
  EXPECT_TRUE(at::equal(make_batch(mnist_like, all, mnist, nullptr, 0, 0),
                        make_batch(mnist_like.to(at::kCUDA), all, mnist, nullptr, 0, 0).cpu()));
  EXPECT_ERROR_MENTIONS(make_batch(gpu, at::tensor(std::vector<int64_t>{500}).to(at::kCUDA), norm, nullptr, 0, 0),
                        "out of range");
}
#endif

}  // namespace
}  // namespace bitrobust::data
