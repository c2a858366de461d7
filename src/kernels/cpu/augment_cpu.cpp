// CPU batch assembly: gather + augment + normalize. See NOTE [Augmentation order] in augment_kernels.h.
#include <new>
#include <utility>
#include <vector>

#include "bitrobust/data/augment_kernels.h"

namespace bitrobust::kernels {

void make_batch_cpu(const uint8_t* images, int64_t num_images, int channels, int height, int width,
                    const int64_t* indices, int64_t batch, const float* mean, const float* std,
                    const AugmentSpec* augment, uint64_t seed, uint64_t epoch, float* out) {
  (void)num_images;
  const int64_t plane_size = static_cast<int64_t>(height) * width;
  const int64_t image_size = plane_size * channels;
  const bool autoaugment = augment != nullptr && augment->autoaugment;
  const AutoAugmentPolicy policy = autoaugment ? cifar10_autoaugment_policy(height, width) : AutoAugmentPolicy{};
  // An exception must not leave a parallel region (std::terminate): a thread that cannot get its
  // work space says so, skips its examples, and the failure is thrown after the region.
  bool out_of_memory = false;
#pragma omp parallel
  {
    // Per-thread work space for AutoAugment: two images, histograms and tables.
    std::vector<uint8_t> buffers;
    std::vector<uint32_t> histograms;
    bool ready = true;
    try {
      buffers.resize(autoaugment ? static_cast<size_t>(2 * image_size + 3 * 256) : 0);
      histograms.resize(autoaugment ? 3 * 256 : 0);
    } catch (const std::bad_alloc&) {
      ready = false;
#pragma omp atomic write
      out_of_memory = true;
    }
#pragma omp for schedule(static)
    for (int64_t b = 0; b < batch; ++b) {
      if (!ready) continue;
      const int64_t index = indices[b];
      const uint8_t* image = images + index * image_size;
      float* target = out + b * image_size;
      if (augment == nullptr) {
        // Fast path: a straight normalize of a contiguous image.
        for (int c = 0; c < channels; ++c) {
          const uint8_t* plane = image + c * plane_size;
          float* dst = target + c * plane_size;
          const float m = mean[c], s = std[c];
          for (int64_t i = 0; i < plane_size; ++i) dst[i] = normalize_pixel(plane[i], m, s);
        }
        continue;
      }
      const ExampleAugmentation a = draw_augmentation(*augment, seed, epoch, index, height, width);
      if (!autoaugment_applies(a, policy, 0) && !autoaugment_applies(a, policy, 1)) {
        for (int c = 0; c < channels; ++c) {
          const uint8_t* plane = image + c * plane_size;
          float* dst = target + c * plane_size;
          const float m = mean[c], s = std[c];
          for (int y = 0; y < height; ++y)
            for (int x = 0; x < width; ++x)
              dst[static_cast<int64_t>(y) * width + x] =
                  augmented_pixel(plane, height, width, y, x, a, augment->fill[c], m, s);
        }
        continue;
      }
      uint8_t* src = buffers.data();
      uint8_t* dst = src + image_size;
      uint8_t* luts = dst + image_size;
      for (int c = 0; c < channels; ++c)
        for (int y = 0; y < height; ++y)
          for (int x = 0; x < width; ++x)
            src[c * plane_size + static_cast<int64_t>(y) * width + x] =
                cropped_pixel(image + c * plane_size, height, width, y, x, a, augment->fill[c]);
      for (int k = 0; k < 2; ++k) {
        if (!autoaugment_applies(a, policy, k)) continue;
        autoaugment_apply_host(policy.steps[a.sub_policy][k], a.negative[k], src, height, width, augment->fill,
                               histograms.data(), luts, dst);
        std::swap(src, dst);
      }
      for (int c = 0; c < channels; ++c) {
        const float m = mean[c], s = std[c];
        for (int y = 0; y < height; ++y)
          for (int x = 0; x < width; ++x) {
            const int64_t i = c * plane_size + static_cast<int64_t>(y) * width + x;
            target[i] = in_cutout(a, y, x) ? 0.0f : normalize_pixel(src[i], m, s);
          }
      }
    }
  }
  if (out_of_memory) throw std::bad_alloc();
}

}  // namespace bitrobust::kernels
