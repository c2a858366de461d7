// CUDA batch assembly, the twin of augment_cpu.cpp: one block per example, its threads striding
// over the example's pixels. The same header functions compute the random choices and every
// output value, so results are bit-identical to the CPU kernel (see NOTE [Augmentation streams]).
#include <cuda_runtime.h>

#include <string>

#include "bitrobust/common/error.h"
#include "bitrobust/data/augment_kernels.h"

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
    target[i] = augmented_pixel(image + c * plane_size, height, width, y, x, a, constants.mean[c], constants.std[c]);
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
  make_batch_kernel<<<static_cast<unsigned>(batch), kThreadsPerBlock, 0, static_cast<cudaStream_t>(stream)>>>(
      images, channels, height, width, indices, constants, spec, augment != nullptr, seed, epoch, out);
  const cudaError_t status = cudaGetLastError();
  BR_CHECK(status == cudaSuccess, "make_batch_cuda: kernel launch failed: ", cudaGetErrorString(status));
}

}  // namespace bitrobust::kernels
