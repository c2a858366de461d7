// CUDA batch assembly, the twin of augment_cpu.cpp: one block per example, its threads striding
// over the example's pixels. The same header functions compute the random choices and every
// output value, so results are bit-identical to the CPU kernel (see NOTE [Augmentation streams]).
// With AutoAugment the block stages the cropped image in shared memory and applies the
// sub-policy's operations there, one barrier-separated pass each (NOTE [AutoAugment exactness]).
#include <string>

#include "bitrobust/common/error.h"
#include "bitrobust/data/augment_kernels.h"
#include "kernels/cuda/cuda_launch.h"

namespace bitrobust::kernels {
namespace {

struct ChannelConstants {
  float mean[kMaxBatchChannels];
  float std[kMaxBatchChannels];
};

constexpr int kThreadsPerBlock = 256;

__global__ void make_batch_kernel(const uint8_t* __restrict__ images, int channels, int height, int width,
                                  const int64_t* __restrict__ indices, ChannelConstants constants,
                                  AugmentSpec spec, bool augment, uint64_t seed, uint64_t epoch,
                                  float* __restrict__ out) {
  const int64_t b = blockIdx.x;
  const int64_t index = indices[b];
  // Every thread draws the example's parameters itself (two Philox blocks, a few dozen integer
  // operations): cheaper than a shared-memory broadcast and a barrier.
  const ExampleAugmentation a =
      augment ? draw_augmentation(spec, seed, epoch, index, height, width) : ExampleAugmentation{};
  const int64_t plane_size = static_cast<int64_t>(height) * width;
  const int64_t image_size = plane_size * channels;
  const uint8_t* image = images + index * image_size;
  float* target = out + b * image_size;
  for (int64_t i = threadIdx.x; i < image_size; i += blockDim.x) {
    const int c = static_cast<int>(i / plane_size);
    const int64_t p = i - c * plane_size;
    const int y = static_cast<int>(p / width), x = static_cast<int>(p - static_cast<int64_t>(y) * width);
    target[i] = augmented_pixel(image + c * plane_size, height, width, y, x, a, spec.fill[c], constants.mean[c],
                                constants.std[c]);
  }
}

__global__ void make_batch_autoaugment_kernel(const uint8_t* __restrict__ images, int height, int width,
                                              const int64_t* __restrict__ indices, ChannelConstants constants,
                                              __grid_constant__ const AugmentSpec spec,
                                              __grid_constant__ const AutoAugmentPolicy policy, uint64_t seed,
                                              uint64_t epoch, float* __restrict__ out) {
  __shared__ uint32_t histograms[3 * 256];
  __shared__ uint8_t luts[3 * 256];
  __shared__ int mean_luma;
  BR_DYNAMIC_SHARED(uint8_t, buffers);  // two images: 2 * image_size bytes
  constexpr int channels = 3;
  const int64_t b = blockIdx.x;
  const int64_t index = indices[b];
  const ExampleAugmentation a = draw_augmentation(spec, seed, epoch, index, height, width);
  const int plane_size = height * width;
  const int image_size = plane_size * channels;
  const uint8_t* image = images + index * static_cast<int64_t>(image_size);
  float* target = out + b * image_size;
  uint8_t* src = buffers;
  uint8_t* dst = buffers + image_size;
  for (int i = threadIdx.x; i < image_size; i += blockDim.x) {
    const int c = i / plane_size, p = i - c * plane_size, y = p / width, x = p - y * width;
    src[i] = cropped_pixel(image + c * plane_size, height, width, y, x, a, spec.fill[c]);
  }
  __syncthreads();
  for (int k = 0; k < 2; ++k) {
    if (!autoaugment_applies(a, policy, k)) continue;  // the same branch in every thread
    const AutoAugmentStep& step = policy.steps[a.sub_policy][k];
    const AutoAugmentImage im{src, height, width};
    const AutoAugmentStats stats = autoaugment_stats(step.op);
    if (stats != AutoAugmentStats::kNone) {
      for (int i = threadIdx.x; i < 3 * 256; i += blockDim.x) histograms[i] = 0;
      __syncthreads();
      for (int p = threadIdx.x; p < plane_size; p += blockDim.x) {
        const int y = p / width, x = p - y * width;
        if (stats == AutoAugmentStats::kChannelHistograms) {
          for (int c = 0; c < channels; ++c) atomicAdd(&histograms[c * 256 + im.at(c, y, x)], 1u);
        } else {
          atomicAdd(&histograms[pil_luma(im.at(0, y, x), im.at(1, y, x), im.at(2, y, x))], 1u);
        }
      }
      __syncthreads();
      if (stats == AutoAugmentStats::kChannelHistograms && threadIdx.x < channels) {
        autoaugment_channel_lut(step.op, histograms + threadIdx.x * 256, luts + threadIdx.x * 256);
      } else if (stats == AutoAugmentStats::kLumaHistogram && threadIdx.x == 0) {
        mean_luma = contrast_mean(histograms, plane_size);
      }
      __syncthreads();
    }
    AutoAugmentTables tables;
    tables.luts = luts;
    if (stats == AutoAugmentStats::kLumaHistogram) tables.mean_luma = mean_luma;
    for (int i = threadIdx.x; i < image_size; i += blockDim.x) {
      const int c = i / plane_size, p = i - c * plane_size, y = p / width, x = p - y * width;
      dst[i] = autoaugment_pixel(step, a.negative[k], im, c, y, x, tables, spec.fill);
    }
    __syncthreads();
    uint8_t* t = src;
    src = dst;
    dst = t;
  }
  for (int i = threadIdx.x; i < image_size; i += blockDim.x) {
    const int c = i / plane_size, p = i - c * plane_size, y = p / width, x = p - y * width;
    target[i] = in_cutout(a, y, x) ? 0.0f : normalize_pixel(src[i], constants.mean[c], constants.std[c]);
  }
}

}  // namespace

void make_batch_cuda(const uint8_t* images, int64_t num_images, int channels, int height, int width,
                     const int64_t* indices, int64_t batch, const float* mean, const float* std,
                     const AugmentSpec* augment, uint64_t seed, uint64_t epoch, float* out, void* stream) {
  (void)num_images;
  if (batch == 0) return;
  BR_CHECK(channels >= 1 && channels <= kMaxBatchChannels, "make_batch_cuda: ", channels,
           " channels, supported 1..", kMaxBatchChannels);
  BR_CHECK(batch <= 0x7fffffff, "make_batch_cuda: batch of ", batch, " examples is too large for one launch");
  ChannelConstants constants{};
  for (int c = 0; c < channels; ++c) {
    constants.mean[c] = mean[c];
    constants.std[c] = std[c];
  }
  const AugmentSpec spec = augment != nullptr ? *augment : AugmentSpec{};
  if (spec.autoaugment) {
    BR_CHECK(channels == 3, "make_batch_cuda: AutoAugment needs 3-channel (RGB) images, got ", channels, " channels");
    BR_CHECK(static_cast<int64_t>(height) * width <= kMaxAutoAugmentCudaPixels, "make_batch_cuda: AutoAugment on CUDA takes images of up to ",
             kMaxAutoAugmentCudaPixels, " pixels, got ", height, "x", width);
    const size_t buffer_bytes = static_cast<size_t>(2 * 3) * height * width;
    // The policy travels by value (about 2.8 KB of the 4 KB of kernel parameters): no copy to
    // synchronize with, and concurrent calls on other streams cannot overwrite it.
    static_assert(sizeof(AutoAugmentPolicy) + sizeof(AugmentSpec) + sizeof(ChannelConstants) + 64 <= 4096,
                  "AutoAugment kernel parameters exceed 4 KB");
    BR_LAUNCH(make_batch_autoaugment_kernel, static_cast<unsigned>(batch), kThreadsPerBlock, buffer_bytes,
              static_cast<cudaStream_t>(stream))(
        images, height, width, indices, constants, spec, cifar10_autoaugment_policy(height, width), seed, epoch, out);
    const cudaError_t status = cudaGetLastError();
    BR_CHECK(status == cudaSuccess, "make_batch_cuda: kernel launch failed: ", cudaGetErrorString(status));
    return;
  }
  BR_LAUNCH(make_batch_kernel, static_cast<unsigned>(batch), kThreadsPerBlock, 0, static_cast<cudaStream_t>(stream))(
      images, channels, height, width, indices, constants, spec, augment != nullptr, seed, epoch, out);
  const cudaError_t status = cudaGetLastError();
  BR_CHECK(status == cudaSuccess, "make_batch_cuda: kernel launch failed: ", cudaGetErrorString(status));
}

}  // namespace bitrobust::kernels
