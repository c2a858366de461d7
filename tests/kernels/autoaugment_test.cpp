// AutoAugment (CIFAR-10 policy): every operation against Pillow 9.4's own results, the policy's
// random choices, and the batch kernel's composition. See NOTE [AutoAugment exactness].
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bitrobust/data/augment_kernels.h"
#include "bitrobust/data/autoaugment_kernels.h"

namespace bitrobust::kernels {
namespace {

struct PilSingleOp {
  const char* op;
  int index, sign, image;
  uint64_t digest;
};
struct PilSubPolicy {
  int sub_policy, sign1, sign2, image;
  uint64_t digest;
};
#include "kernels/autoaugment_pil_digests.inc"

constexpr int kSize = 32;
constexpr int kPixels = 3 * kSize * kSize;
const uint8_t kMeanFill[3] = {125, 122, 113};  // int(255 * mean), the reference's fill for CIFAR-10

uint32_t hash8(uint64_t i) { return static_cast<uint32_t>(((i * 2654435761ull) & 0xFFFFFFFFull) >> 24); }

/// The synthetic images of scripts/make_autoaugment_fixture.py (CHW).
std::vector<uint8_t> synthetic_image(int k) {
  std::vector<uint8_t> out(kPixels);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < kSize; ++y)
      for (int x = 0; x < kSize; ++x) {
        const uint64_t i = static_cast<uint64_t>((k * 3 + c) * kSize * kSize + y * kSize + x);
        int v;
        if (k == 0) v = static_cast<int>(hash8(i));
        else if (k == 1) v = 40 + (x * 4 + y * 2 + c * 17 + static_cast<int>(hash8(i) & 15)) % 160;
        else if (k == 2) v = 60 + ((x / 8) + (y / 8) * 4 + c) % 7 * 9;
        else if (k == 3) v = (x + y * 3 + c) % 10 < 7 ? 30 : 200;
        else v = 77;
        out[(c * kSize + y) * kSize + x] = static_cast<uint8_t>(v);
      }
  return out;
}

uint64_t fnv1a(const std::vector<uint8_t>& bytes) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (uint8_t b : bytes) h = (h ^ b) * 0x100000001B3ull;
  return h;
}

AutoAugmentOp op_named(const std::string& name) {
  for (int i = 0; i <= static_cast<int>(AutoAugmentOp::kInvert); ++i) {
    const auto op = static_cast<AutoAugmentOp>(i);
    if (name == autoaugment_op_name(op)) return op;
  }
  ADD_FAILURE() << "unknown operation " << name;
  return AutoAugmentOp::kInvert;
}

std::vector<uint8_t> apply(const AutoAugmentStep& step, bool negative, const std::vector<uint8_t>& image) {
  std::vector<uint8_t> out(kPixels);
  std::vector<uint32_t> histograms(3 * 256);
  std::vector<uint8_t> luts(3 * 256);
  autoaugment_apply_host(step, negative, image.data(), kSize, kSize, kMeanFill, histograms.data(), luts.data(),
                         out.data());
  return out;
}

/// With BITROBUST_AUTOAUGMENT_DUMP=DIR, writes an output under the fixture script's --dump name.
void maybe_dump(const std::string& name, const std::vector<uint8_t>& bytes) {
  const char* dir = std::getenv("BITROBUST_AUTOAUGMENT_DUMP");
  if (dir == nullptr) return;
  FILE* f = std::fopen((std::string(dir) + "/" + name + ".ours").c_str(), "wb");
  if (f == nullptr) return;
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

TEST(AutoAugment, MagnitudesAreNumpysLinspaceValues) {
  // numpy 1.24 linspace values, as printed by float.hex().
  EXPECT_EQ(autoaugment_magnitude(AutoAugmentOp::kShearY, 7), 0x1.ddddddddddddep-3);
  EXPECT_EQ(autoaugment_magnitude(AutoAugmentOp::kShearY, 8), 0x1.1111111111111p-2);
  EXPECT_EQ(autoaugment_magnitude(AutoAugmentOp::kTranslateX, 9), 0x1.d00c5fe740318p-2);
  EXPECT_EQ(autoaugment_magnitude(AutoAugmentOp::kTranslateY, 3), 0x1.355d9544d5766p-3);
  EXPECT_EQ(autoaugment_magnitude(AutoAugmentOp::kColor, 3), 0x1.3333333333334p-2);
  EXPECT_EQ(autoaugment_magnitude(AutoAugmentOp::kSharpness, 9), 0x1.ccccccccccccdp-1);
  EXPECT_EQ(autoaugment_magnitude(AutoAugmentOp::kSolarize, 2), 0x1.8e38e38e38e39p+7);
  EXPECT_EQ(autoaugment_magnitude(AutoAugmentOp::kSolarize, 8), 0x1.c71c71c71c720p+4);
  EXPECT_EQ(autoaugment_magnitude(AutoAugmentOp::kRotate, 2), 20.0 / 3.0);
  const int posterize[10] = {8, 8, 7, 7, 6, 6, 5, 5, 4, 4};  // np.round(np.linspace(8, 4, 10))
  for (int i = 0; i < 10; ++i) EXPECT_EQ(autoaugment_magnitude(AutoAugmentOp::kPosterize, i), posterize[i]) << i;
}

TEST(AutoAugment, EveryOperationEqualsPillowBitForBit) {
  std::vector<std::vector<uint8_t>> images;
  for (int k = 0; k < 5; ++k) images.push_back(synthetic_image(k));
  int mismatches = 0;
  for (const PilSingleOp& c : kSingleOps) {
    const AutoAugmentStep step = autoaugment_step(op_named(c.op), c.index, 1.0, kSize, kSize);
    const std::vector<uint8_t> out = apply(step, c.sign < 0, images[c.image]);
    const std::string name =
        std::string(c.op) + "_" + std::to_string(c.index) + "_" + std::to_string(c.sign) + "_" + std::to_string(c.image);
    maybe_dump(name, out);
    if (fnv1a(out) != c.digest) {
      ++mismatches;
      ADD_FAILURE() << name << " differs from Pillow";
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << std::size(kSingleOps);
}

TEST(AutoAugment, WholeSubPoliciesEqualPillowBitForBit) {
  std::vector<std::vector<uint8_t>> images;
  for (int k = 0; k < 5; ++k) images.push_back(synthetic_image(k));
  const AutoAugmentPolicy policy = cifar10_autoaugment_policy(kSize, kSize);
  int mismatches = 0;
  for (const PilSubPolicy& c : kSubPolicies) {
    const std::vector<uint8_t> once = apply(policy.steps[c.sub_policy][0], c.sign1 < 0, images[c.image]);
    const std::vector<uint8_t> twice = apply(policy.steps[c.sub_policy][1], c.sign2 < 0, once);
    if (fnv1a(twice) != c.digest) {
      ++mismatches;
      ADD_FAILURE() << "sub-policy " << c.sub_policy << " signs " << c.sign1 << "/" << c.sign2 << " image " << c.image;
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << std::size(kSubPolicies);
}

TEST(AutoAugment, PolicyProbabilitiesAreExactThresholds) {
  const AutoAugmentPolicy policy = cifar10_autoaugment_policy(kSize, kSize);
  // Sub-policy 0: (0.1, invert), (0.2, contrast); 14: (0.5, solarize), (0.0, invert).
  EXPECT_EQ(policy.steps[0][0].op, AutoAugmentOp::kInvert);
  EXPECT_EQ(policy.steps[0][0].apply_below, static_cast<uint64_t>(std::ceil(0.1 * 4294967296.0)));
  EXPECT_EQ(policy.steps[0][1].op, AutoAugmentOp::kContrast);
  EXPECT_EQ(policy.steps[14][1].apply_below, 0u);  // never applies
  EXPECT_EQ(policy.steps[14][0].apply_below, 2147483648u);
}

TEST(AutoAugment, DrawsAreUniformOverSubPoliciesAndApplyWithTheirProbabilities) {
  AugmentSpec spec;
  spec.autoaugment = true;
  const AutoAugmentPolicy policy = cifar10_autoaugment_policy(kSize, kSize);
  const int n = 100000;
  std::vector<int> chosen(kAutoAugmentSubPolicies, 0), applied(2 * kAutoAugmentSubPolicies, 0);
  int negative = 0;
  for (int i = 0; i < n; ++i) {
    const ExampleAugmentation a = draw_augmentation(spec, 3, 1, i, kSize, kSize);
    ASSERT_GE(a.sub_policy, 0);
    ASSERT_LT(a.sub_policy, kAutoAugmentSubPolicies);
    ++chosen[a.sub_policy];
    for (int k = 0; k < 2; ++k) applied[2 * a.sub_policy + k] += autoaugment_applies(a, policy, k);
    negative += a.negative[0];
  }
  // Chi-square over 25 equally likely sub-policies (24 degrees of freedom): 99.9% quantile 51.2.
  double chi2 = 0;
  const double expected = static_cast<double>(n) / kAutoAugmentSubPolicies;
  for (int s = 0; s < kAutoAugmentSubPolicies; ++s) chi2 += (chosen[s] - expected) * (chosen[s] - expected) / expected;
  EXPECT_LT(chi2, 51.2);
  for (int s = 0; s < kAutoAugmentSubPolicies; ++s)
    for (int k = 0; k < 2; ++k) {
      const double p = static_cast<double>(policy.steps[s][k].apply_below) / 4294967296.0;
      const double mean = chosen[s] * p, sd = std::sqrt(chosen[s] * p * (1 - p));
      EXPECT_NEAR(applied[2 * s + k], mean, 5 * sd + 1e-9) << "sub-policy " << s << " op " << k;
    }
  EXPECT_NEAR(negative, n / 2.0, 5 * std::sqrt(n / 4.0));
  // Without AutoAugment there is no sub-policy, and the other draws are unchanged.
  AugmentSpec off = spec;
  off.autoaugment = false;
  off.random_crop = spec.random_crop = true;
  off.cutout = spec.cutout = 8;
  for (int i = 0; i < 100; ++i) {
    const ExampleAugmentation with = draw_augmentation(spec, 9, 2, i, kSize, kSize);
    const ExampleAugmentation without = draw_augmentation(off, 9, 2, i, kSize, kSize);
    EXPECT_EQ(without.sub_policy, -1);
    EXPECT_EQ(with.dy, without.dy);
    EXPECT_EQ(with.dx, without.dx);
    EXPECT_EQ(with.cutout_x0, without.cutout_x0);
    EXPECT_EQ(with.cutout_y0, without.cutout_y0);
  }
}

std::vector<float> run_batch(const std::vector<uint8_t>& images, int64_t n, const std::vector<int64_t>& indices,
                             const AugmentSpec& spec, uint64_t seed, uint64_t epoch) {
  const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, std[3] = {0.2470f, 0.2435f, 0.2616f};
  std::vector<float> out(indices.size() * kPixels);
  make_batch_cpu(images.data(), n, 3, kSize, kSize, indices.data(), static_cast<int64_t>(indices.size()), mean, std,
                 &spec, seed, epoch, out.data());
  return out;
}

TEST(AutoAugment, BatchKernelComposesCropFlipPolicyNormalizeAndCutout) {
  const int64_t n = 64;
  std::vector<uint8_t> images;
  for (int64_t i = 0; i < n; ++i) {
    const std::vector<uint8_t> image = synthetic_image(static_cast<int>(i % 4));
    images.insert(images.end(), image.begin(), image.end());
    images[i * kPixels + (i % kPixels)] ^= static_cast<uint8_t>(i);  // make every image distinct
  }
  AugmentSpec spec;
  spec.random_crop = true;
  spec.horizontal_flip = true;
  spec.cutout = 16;
  spec.autoaugment = true;
  std::memcpy(spec.fill, kMeanFill, 3);
  std::vector<int64_t> indices(n);
  for (int64_t i = 0; i < n; ++i) indices[i] = (i * 37) % n;
  const std::vector<float> out = run_batch(images, n, indices, spec, 11, 4);
  const AutoAugmentPolicy policy = cifar10_autoaugment_policy(kSize, kSize);
  const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, std[3] = {0.2470f, 0.2435f, 0.2616f};
  int augmented = 0;
  for (int64_t b = 0; b < n; ++b) {
    const ExampleAugmentation a = draw_augmentation(spec, 11, 4, indices[b], kSize, kSize);
    std::vector<uint8_t> image(kPixels);
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < kSize; ++y)
        for (int x = 0; x < kSize; ++x)
          image[(c * kSize + y) * kSize + x] =
              cropped_pixel(&images[indices[b] * kPixels + c * kSize * kSize], kSize, kSize, y, x, a, kMeanFill[c]);
    for (int k = 0; k < 2; ++k)
      if (autoaugment_applies(a, policy, k)) {
        image = apply(policy.steps[a.sub_policy][k], a.negative[k], image);
        ++augmented;
      }
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < kSize; ++y)
        for (int x = 0; x < kSize; ++x) {
          const float expected =
              in_cutout(a, y, x) ? 0.0f : normalize_pixel(image[(c * kSize + y) * kSize + x], mean[c], std[c]);
          ASSERT_EQ(out[b * kPixels + (c * kSize + y) * kSize + x], expected) << "b=" << b << " c=" << c;
        }
  }
  EXPECT_GT(augmented, n / 2);  // the policy applies about 1.0 operations per image
  // The batch does not depend on the thread count.
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const std::vector<float> serial = run_batch(images, n, indices, spec, 11, 4);
  omp_set_num_threads(threads);
  EXPECT_EQ(serial, out);
}

TEST(AutoAugment, CropPaddingUsesTheFillValue) {
  std::vector<uint8_t> image(kPixels, 255);
  AugmentSpec spec;
  spec.random_crop = true;
  spec.padding = 4;
  std::memcpy(spec.fill, kMeanFill, 3);
  for (int64_t i = 0; i < 200; ++i) {
    const ExampleAugmentation a = draw_augmentation(spec, 5, 0, i, kSize, kSize);
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < kSize; ++y) {
        const int sy = y + a.dy;
        const uint8_t expected = (sy < 0 || sy >= kSize || a.dx > 0) ? kMeanFill[c] : 255;
        // Column kSize - 1 reads source column kSize - 1 + dx: padding exactly when dx > 0.
        EXPECT_EQ(cropped_pixel(&image[c * kSize * kSize], kSize, kSize, y, kSize - 1, a, kMeanFill[c]), expected);
      }
  }
}

}  // namespace
}  // namespace bitrobust::kernels
