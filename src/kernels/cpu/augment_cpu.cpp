// CPU batch assembly: gather + augment + normalize. See NOTE [Augmentation order] in augment_kernels.h.
#include "bitrobust/data/augment_kernels.h"

namespace bitrobust::kernels {

void make_batch_cpu(const uint8_t* images, int64_t num_images, int channels, int height, int width,
                    const int64_t* indices, int64_t batch, const float* mean, const float* std,
                    const AugmentSpec* augment, uint64_t seed, uint64_t epoch, float* out) {
  (void)num_images;
  const int64_t plane_size = static_cast<int64_t>(height) * width;
  const int64_t image_size = plane_size * channels;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < batch; ++b) {
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
    for (int c = 0; c < channels; ++c) {
      const uint8_t* plane = image + c * plane_size;
      float* dst = target + c * plane_size;
      const float m = mean[c], s = std[c];
      for (int y = 0; y < height; ++y) {
        for (int x = 0; x < width; ++x) {
          dst[static_cast<int64_t>(y) * width + x] = augmented_pixel(plane, height, width, y, x, a, m, s);
        }
      }
    }
  }
}

}  // namespace bitrobust::kernels
