#pragma once
// Batch assembly kernels: gather examples by index, augment, normalize, in one pass over raw pointers.
// Plain C++ (no Torch) so the CPU kernel, its CUDA twin and their tests share this header.
//
// NOTE [Augmentation streams]: the augmentation of an example is a pure function of
// (seed, epoch, example index): the Philox key is make_key(seed, kAugmentStream, epoch) and the
// counter is (example index, block). Block 0 gives the crop offsets (v[0] -> dy, v[1] -> dx), the
// flip (v[2] top bit) and the cutout row (v[3]); block 1 gives the cutout column (v[0]), the
// AutoAugment sub-policy (v[1]) and whether its first and second operations apply (v[2], v[3]);
// block 2 gives their signs (top bits of v[0], v[1]). Each choice has a fixed slot, so turning one
// augmentation off leaves the others' draws unchanged, and the result does not depend on the batch
// an example lands in, the thread count, or the device.
//
// NOTE [Augmentation order]: as in the reference pipeline (torchvision RandomCrop(32, padding=4,
// fill=mean), RandomHorizontalFlip, CIFAR10Policy(fillcolor=mean), ToTensor, Cutout filled with
// the mean, then the network's whitening):
//   1. crop: the image is padded by `padding` pixels on each side with the raw value fill[c]
//      (0 by default; the reference's int(255 * mean[c]) for CIFAR-10) and an HxW window at offset
//      (padding + dy, padding + dx) is taken, dy, dx uniform in [-padding, padding];
//   2. flip: with probability 1/2 the cropped image is mirrored left-right;
//   3. AutoAugment (optional, RGB only): one of the 25 CIFAR-10 sub-policies, uniformly; each of
//      its two operations applies with its probability (autoaugment_kernels.h);
//   4. normalize: (x / 255 - mean[c]) / std[c];
//   5. cutout: a square of side `cutout` centred at a uniform pixel (cy, cx) of the output,
//      rows [cy - cutout/2, cy - cutout/2 + cutout) and likewise columns (the reference's
//      y +- length//2 for even sides; an odd side keeps its width), clipped at the borders, is set to 0
//      (0 in normalized space: the mean, as the reference's Cutout fills before its whitening).
#include <cstdint>

#include "bitrobust/common/philox.h"
#include "bitrobust/data/autoaugment_kernels.h"

namespace bitrobust::kernels {

/// Stream id of augmentation draws (see NOTE [Augmentation streams]); "AUGMENT" in ASCII.
constexpr uint64_t kAugmentStream = 0x41554741454E54ull;
/// The most channels make_batch supports (normalization constants travel by value to the GPU).
constexpr int kMaxBatchChannels = 16;
/// The largest image (height x width, 3 channels) the CUDA AutoAugment kernel takes (64 x 64): two
/// image buffers (24 KiB), histograms and tables stay well inside the 48 KiB of shared memory a
/// block gets without opting in.
constexpr int kMaxAutoAugmentCudaPixels = 64 * 64;

/// Which augmentations to apply; all off = gather and normalize only.
struct AugmentSpec {
  bool random_crop = false;
  int padding = 4;  ///< pixels of zero padding on each side for the random crop
  bool horizontal_flip = false;
  int cutout = 0;   ///< side of the Cutout square in pixels; 0 = no Cutout
  bool autoaugment = false;  ///< AutoAugment's CIFAR-10 policy (3-channel images only)
  uint8_t fill[kMaxBatchChannels] = {};  ///< raw value of crop padding and of AutoAugment's shear/translate fill
};

/// The random choices for one example (output coordinates; see NOTE [Augmentation order]).
struct ExampleAugmentation {
  int dy = 0, dx = 0;  ///< crop offset relative to the unpadded image, in [-padding, padding]
  bool flip = false;
  int cutout_y0 = 0, cutout_y1 = 0, cutout_x0 = 0, cutout_x1 = 0;  ///< zeroed half-open box; empty when y0 == y1
  int sub_policy = -1;               ///< AutoAugment sub-policy, -1 = no AutoAugment
  uint32_t apply_draw[2] = {0, 0};   ///< operation k applies iff apply_draw[k] < its apply_below
  bool negative[2] = {false, false}; ///< signs of the two operations' magnitudes
};

/// Draws the augmentation of dataset example `index` for (seed, epoch). See NOTE [Augmentation streams].
BR_HOST_DEVICE ExampleAugmentation draw_augmentation(const AugmentSpec& spec, uint64_t seed, uint64_t epoch,
                                                     int64_t index, int height, int width) {
  ExampleAugmentation a;
  const uint64_t key = make_key(seed, kAugmentStream, epoch);
  const Philox4x32 block0 = philox4x32(static_cast<uint64_t>(index), 0, key);
  if (spec.random_crop && spec.padding > 0) {
    const uint32_t span = static_cast<uint32_t>(2 * spec.padding + 1);
    a.dy = static_cast<int>(uniform_below(block0.v[0], span)) - spec.padding;
    a.dx = static_cast<int>(uniform_below(block0.v[1], span)) - spec.padding;
  }
  a.flip = spec.horizontal_flip && (block0.v[2] >> 31) != 0;
  const Philox4x32 block1 = philox4x32(static_cast<uint64_t>(index), 1, key);
  if (spec.autoaugment) {
    const Philox4x32 block2 = philox4x32(static_cast<uint64_t>(index), 2, key);
    a.sub_policy = static_cast<int>(uniform_below(block1.v[1], kAutoAugmentSubPolicies));
    a.apply_draw[0] = block1.v[2];
    a.apply_draw[1] = block1.v[3];
    a.negative[0] = (block2.v[0] >> 31) != 0;
    a.negative[1] = (block2.v[1] >> 31) != 0;
  }
  if (spec.cutout > 0) {
    const int cy = static_cast<int>(uniform_below(block0.v[3], static_cast<uint32_t>(height)));
    const int cx = static_cast<int>(uniform_below(block1.v[0], static_cast<uint32_t>(width)));
    const int half = spec.cutout / 2;
    // Lower half = cutout/2, upper half = cutout - cutout/2, so the box is exactly `cutout` wide
    // before clipping (equal to the reference's y +- length//2 for even lengths).
    a.cutout_y0 = cy - half < 0 ? 0 : cy - half;
    a.cutout_y1 = cy - half + spec.cutout > height ? height : cy - half + spec.cutout;
    a.cutout_x0 = cx - half < 0 ? 0 : cx - half;
    a.cutout_x1 = cx - half + spec.cutout > width ? width : cx - half + spec.cutout;
  }
  return a;
}

/// (x / 255 - mean) / std, written once for both backends so CPU and CUDA round identically
/// (no contraction: the kernels are built with -ffp-contract=off / --fmad=false).
BR_HOST_DEVICE float normalize_pixel(uint8_t x, float mean, float std) {
  return (static_cast<float>(x) / 255.0f - mean) / std;
}

/// Whether operation k (0 or 1) of the example's AutoAugment sub-policy applies.
BR_HOST_DEVICE bool autoaugment_applies(const ExampleAugmentation& a, const AutoAugmentPolicy& policy, int k) {
  return a.sub_policy >= 0 && a.apply_draw[k] < policy.steps[a.sub_policy][k].apply_below;
}

BR_HOST_DEVICE bool in_cutout(const ExampleAugmentation& a, int y, int x) {
  return y >= a.cutout_y0 && y < a.cutout_y1 && x >= a.cutout_x0 && x < a.cutout_x1;
}

/// Raw value at (y, x) of the cropped and flipped image (steps 1-2 of NOTE [Augmentation order]).
BR_HOST_DEVICE uint8_t cropped_pixel(const uint8_t* plane, int height, int width, int y, int x,
                                     const ExampleAugmentation& a, uint8_t fill) {
  const int cropped_x = a.flip ? width - 1 - x : x;
  const int sy = y + a.dy, sx = cropped_x + a.dx;
  return (sy >= 0 && sy < height && sx >= 0 && sx < width) ? plane[static_cast<int64_t>(sy) * width + sx] : fill;
}

/// Output value at (c, y, x) of an example without AutoAugment, whose image plane for channel c
/// starts at `plane`.
BR_HOST_DEVICE float augmented_pixel(const uint8_t* plane, int height, int width, int y, int x,
                                     const ExampleAugmentation& a, uint8_t fill, float mean, float std) {
  if (in_cutout(a, y, x)) return 0.0f;
  return normalize_pixel(cropped_pixel(plane, height, width, y, x, a, fill), mean, std);
}

/// Builds a float batch out[b, c, y, x] (contiguous [batch, channels, height, width]) from
/// images (contiguous uint8 [num_images, channels, height, width]) at the given example indices.
/// Preconditions (checked by the caller, bitrobust::data::make_batch): every index in
/// [0, num_images), 1 <= channels <= kMaxBatchChannels, std[c] != 0, channels == 3 with
/// AutoAugment. augment == nullptr: none.
/// OpenMP over examples; the result does not depend on the thread count.
void make_batch_cpu(const uint8_t* images, int64_t num_images, int channels, int height, int width,
                    const int64_t* indices, int64_t batch, const float* mean, const float* std,
                    const AugmentSpec* augment, uint64_t seed, uint64_t epoch, float* out);

/// The CUDA twin of make_batch_cpu: images, indices and out are device pointers; mean and std are
/// host arrays of `channels` floats; `stream` is a cudaStream_t. Bit-identical to make_batch_cpu.
/// With AutoAugment an example's two image buffers live in shared memory, which limits images to
/// kMaxAutoAugmentCudaPixels pixels. Throws bitrobust::Error if the launch fails or the images are
/// too large. Defined only when the CUDA kernels are built.
void make_batch_cuda(const uint8_t* images, int64_t num_images, int channels, int height, int width,
                     const int64_t* indices, int64_t batch, const float* mean, const float* std,
                     const AugmentSpec* augment, uint64_t seed, uint64_t epoch, float* out, void* stream);

}  // namespace bitrobust::kernels
