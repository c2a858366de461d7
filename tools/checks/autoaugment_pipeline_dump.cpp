// Dumps the CPU batch kernel's augmented images (crop + flip + AutoAugment, no Cutout) and the
// random choices behind them, for scripts/check_autoaugment_pipeline.py to redo with Pillow.
// Built and run by scripts/check_autoaugment_pipeline.sh; not part of the library or the CLI.
// Usage: autoaugment_pipeline_dump IMAGES.u8 COUNT SEED EPOCH OUT_PREFIX
//   IMAGES.u8: COUNT raw CHW 3x32x32 images. Writes OUT_PREFIX.u8 (augmented, CHW) and
//   OUT_PREFIX.txt (one line per image: dy dx flip sub_policy apply0 apply1 negative0 negative1).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bitrobust/data/augment_kernels.h"

using namespace bitrobust::kernels;

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s IMAGES.u8 COUNT SEED EPOCH OUT_PREFIX\n", argv[0]);
    return 2;
  }
  const int64_t count = std::atoll(argv[2]);
  const uint64_t seed = std::strtoull(argv[3], nullptr, 10), epoch = std::strtoull(argv[4], nullptr, 10);
  const int64_t size = 3 * 32 * 32;
  std::vector<uint8_t> images(static_cast<size_t>(count * size));
  FILE* in = std::fopen(argv[1], "rb");
  if (in == nullptr || std::fread(images.data(), 1, images.size(), in) != images.size()) {
    std::fprintf(stderr, "cannot read %lld images from %s\n", static_cast<long long>(count), argv[1]);
    return 1;
  }
  std::fclose(in);
  AugmentSpec spec;
  spec.random_crop = true;
  spec.padding = 4;
  spec.horizontal_flip = true;
  spec.autoaugment = true;
  const uint8_t fill[3] = {125, 122, 113};
  for (int c = 0; c < 3; ++c) spec.fill[c] = fill[c];
  std::vector<int64_t> indices(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) indices[i] = i;
  // mean 0, std 1: the output is x / 255, from which x comes back exactly.
  const float mean[3] = {0, 0, 0}, std_dev[3] = {1, 1, 1};
  std::vector<float> out(images.size());
  make_batch_cpu(images.data(), count, 3, 32, 32, indices.data(), count, mean, std_dev, &spec, seed, epoch, out.data());
  std::vector<uint8_t> bytes(out.size());
  for (size_t i = 0; i < out.size(); ++i) bytes[i] = static_cast<uint8_t>(std::lround(out[i] * 255.0f));
  const std::string prefix = argv[5];
  FILE* u8 = std::fopen((prefix + ".u8").c_str(), "wb");
  std::fwrite(bytes.data(), 1, bytes.size(), u8);
  std::fclose(u8);
  FILE* txt = std::fopen((prefix + ".txt").c_str(), "w");
  const AutoAugmentPolicy policy = cifar10_autoaugment_policy(32, 32);
  for (int64_t i = 0; i < count; ++i) {
    const ExampleAugmentation a = draw_augmentation(spec, seed, epoch, i, 32, 32);
    std::fprintf(txt, "%d %d %d %d %d %d %d %d\n", a.dy, a.dx, a.flip ? 1 : 0, a.sub_policy,
                 autoaugment_applies(a, policy, 0) ? 1 : 0, autoaugment_applies(a, policy, 1) ? 1 : 0,
                 a.negative[0] ? 1 : 0, a.negative[1] ? 1 : 0);
  }
  std::fclose(txt);
  return 0;
}
