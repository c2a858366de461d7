// Batch assembly kernel (gather + augment + normalize), torch-free.
#include <gtest/gtest.h>

#include <array>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <vector>

#include "bitrobust/common/philox.h"
#include "bitrobust/data/augment_kernels.h"

namespace bitrobust::kernels {
namespace {

struct Images {
  int64_t n;
  int c, h, w;
  std::vector<uint8_t> pixels;  // [n, c, h, w]
  uint8_t at(int64_t i, int ch, int y, int x) const { return pixels[((i * c + ch) * h + y) * w + x]; }
};

Images random_images(int64_t n, int c, int h, int w, uint64_t seed, int min_value = 0) {
  Images images{n, c, h, w, std::vector<uint8_t>(static_cast<size_t>(n * c * h * w))};
  PhiloxStream random(seed, 1);
  for (uint8_t& p : images.pixels) p = static_cast<uint8_t>(min_value + random.below(256 - min_value));
  return images;
}

struct Norm {
  std::vector<float> mean, std;
};

Norm cifar_norm() { return {{0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}}; }

std::vector<float> run(const Images& images, const std::vector<int64_t>& indices, const Norm& norm,
                       const AugmentSpec* spec, uint64_t seed, uint64_t epoch) {
  std::vector<float> out(indices.size() * images.c * images.h * images.w, -12345.0f);
  make_batch_cpu(images.pixels.data(), images.n, images.c, images.h, images.w, indices.data(),
                 static_cast<int64_t>(indices.size()), norm.mean.data(), norm.std.data(), spec, seed, epoch, out.data());
  return out;
}

float expected_normalized(uint8_t x, float mean, float std) {
  const float scaled = static_cast<float>(x) / 255.0f;
  const float centred = scaled - mean;
  return centred / std;
}

/// Value of out[b, c, y, x] for a batch of images of the given geometry.
float out_at(const std::vector<float>& out, const Images& g, int64_t b, int c, int y, int x) {
  return out[((b * g.c + c) * g.h + y) * g.w + x];
}

AugmentSpec crop_only(int padding) {
  AugmentSpec spec;
  spec.random_crop = true;
  spec.padding = padding;
  return spec;
}
AugmentSpec flip_only() {
  AugmentSpec spec;
  spec.horizontal_flip = true;
  return spec;
}
AugmentSpec cutout_only(int side) {
  AugmentSpec spec;
  spec.cutout = side;
  return spec;
}
AugmentSpec cifar_spec() {
  AugmentSpec spec;
  spec.random_crop = true;
  spec.padding = 4;
  spec.horizontal_flip = true;
  spec.cutout = 16;
  return spec;
}

TEST(AugmentKernel, NoAugmentationGivesExactNormalizedPixelsAtTheIndices) {
  const Images images = random_images(20, 3, 32, 32, 11);
  const Norm norm = cifar_norm();
  const std::vector<int64_t> indices = {5, 0, 19, 5, 7};
  const std::vector<float> out = run(images, indices, norm, nullptr, 1, 0);
  for (size_t b = 0; b < indices.size(); ++b)
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x)
          ASSERT_EQ(out_at(out, images, b, c, y, x),
                    expected_normalized(images.at(indices[b], c, y, x), norm.mean[c], norm.std[c]))
              << "b=" << b << " c=" << c << " y=" << y << " x=" << x;
}

TEST(AugmentKernel, AllOffSpecEqualsNoAugmentation) {
  const Images images = random_images(8, 3, 32, 32, 12);
  const std::vector<int64_t> indices = {1, 2, 3, 7};
  const AugmentSpec off;
  EXPECT_EQ(run(images, indices, cifar_norm(), &off, 5, 3), run(images, indices, cifar_norm(), nullptr, 5, 3));
  // A crop with zero padding is the identity too.
  const AugmentSpec no_pad = crop_only(0);
  EXPECT_EQ(run(images, indices, cifar_norm(), &no_pad, 5, 3), run(images, indices, cifar_norm(), nullptr, 5, 3));
}

TEST(AugmentKernel, FlipMirrorsRowsForAboutHalfTheExamples) {
  // Every image is the same horizontal ramp: pixel (y, x) = 10 * x + y, so a flip is recognisable.
  const int n = 2000, h = 5, w = 7;
  Images images{n, 1, h, w, std::vector<uint8_t>(static_cast<size_t>(n * h * w))};
  for (int i = 0; i < n; ++i)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) images.pixels[(static_cast<size_t>(i) * h + y) * w + x] = static_cast<uint8_t>(10 * x + y);
  const Norm norm{{0.25f}, {0.5f}};
  std::vector<int64_t> indices(n);
  for (int i = 0; i < n; ++i) indices[i] = i;
  const AugmentSpec spec = flip_only();
  const std::vector<float> out = run(images, indices, norm, &spec, 42, 0);
  int flipped = 0;
  for (int b = 0; b < n; ++b) {
    const bool is_flipped = out_at(out, images, b, 0, 0, 0) == expected_normalized(10 * (w - 1), 0.25f, 0.5f);
    flipped += is_flipped;
    EXPECT_EQ(is_flipped, draw_augmentation(spec, 42, 0, b, h, w).flip);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const int source_x = is_flipped ? w - 1 - x : x;
        ASSERT_EQ(out_at(out, images, b, 0, y, x), expected_normalized(10 * source_x + y, 0.25f, 0.5f));
      }
  }
  // Binomial(2000, 1/2): standard deviation ~22; +-5 sigma.
  EXPECT_GT(flipped, 1000 - 112);
  EXPECT_LT(flipped, 1000 + 112);
}

TEST(AugmentKernel, CropShiftsByAtMostThePaddingAndFillsWithZeroPixels) {
  // Pixel values 1 + y * 12 + x are unique and nonzero, so each output pixel tells where it came
  // from, and a raw 0 (normalized -mean/std) can only be padding.
  const int n = 3000, h = 12, w = 12, padding = 4;
  Images images{n, 2, h, w, std::vector<uint8_t>(static_cast<size_t>(n * 2 * h * w))};
  for (int i = 0; i < n; ++i)
    for (int c = 0; c < 2; ++c)
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
          images.pixels[((static_cast<size_t>(i) * 2 + c) * h + y) * w + x] = static_cast<uint8_t>(1 + y * w + x);
  const Norm norm{{0.3f, 0.6f}, {0.2f, 0.4f}};
  std::vector<int64_t> indices(n);
  for (int i = 0; i < n; ++i) indices[i] = i;
  const AugmentSpec spec = crop_only(padding);
  const std::vector<float> out = run(images, indices, norm, &spec, 7, 2);

  std::vector<int> offset_counts((2 * padding + 1) * (2 * padding + 1), 0);
  std::map<float, int> value_of[2];  // normalized value -> raw pixel value
  for (int c = 0; c < 2; ++c)
    for (int value = 1; value <= h * w; ++value)
      value_of[c][expected_normalized(static_cast<uint8_t>(value), norm.mean[c], norm.std[c])] = value;
  for (int b = 0; b < n; ++b) {
    int dy = 0, dx = 0;
    bool found = false;
    for (int c = 0; c < 2; ++c) {
      const float padded = expected_normalized(0, norm.mean[c], norm.std[c]);
      EXPECT_FLOAT_EQ(padded, -norm.mean[c] / norm.std[c]);
      int padded_pixels = 0;
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) {
          const float v = out_at(out, images, b, c, y, x);
          if (v == padded) {
            ++padded_pixels;
            continue;
          }
          const auto found_value = value_of[c].find(v);
          ASSERT_NE(found_value, value_of[c].end()) << "output pixel is not a normalized input pixel";
          const int value = found_value->second;
          const int sy = (value - 1) / w, sx = (value - 1) % w;
          if (!found) {
            dy = sy - y;
            dx = sx - x;
            found = true;
          }
          ASSERT_EQ(sy - y, dy) << "the crop is not a pure shift";
          ASSERT_EQ(sx - x, dx) << "the crop is not a pure shift";
        }
      ASSERT_TRUE(found);
      ASSERT_LE(std::abs(dy), padding);
      ASSERT_LE(std::abs(dx), padding);
      // Padding fills exactly the rows and columns shifted in from outside the image.
      EXPECT_EQ(padded_pixels, std::abs(dy) * w + std::abs(dx) * h - std::abs(dy) * std::abs(dx));
    }
    const ExampleAugmentation drawn = draw_augmentation(spec, 7, 2, b, h, w);
    EXPECT_EQ(drawn.dy, dy);
    EXPECT_EQ(drawn.dx, dx);
    ++offset_counts[(dy + padding) * (2 * padding + 1) + dx + padding];
  }
  // All 81 offsets occur, about uniformly (expected 37 each).
  for (int count : offset_counts) {
    EXPECT_GT(count, 10);
    EXPECT_LT(count, 75);
  }
}

TEST(AugmentKernel, CutoutZeroesOneClippedSquareOfAtMostSideSquaredPixels) {
  const int n = 1000, h = 32, w = 32, side = 16;
  // Nonzero pixels and a mean that no pixel / 255 equals: an output 0 can only come from Cutout.
  const Images images = random_images(n, 3, h, w, 13, 1);
  const Norm norm{{0.1f, 0.21f, 0.33f}, {0.25f, 0.25f, 0.25f}};  // 255 * mean is no integer
  std::vector<int64_t> indices(n);
  for (int i = 0; i < n; ++i) indices[i] = i;
  const AugmentSpec spec = cutout_only(side);
  const std::vector<float> out = run(images, indices, norm, &spec, 3, 1);
  const std::vector<float> plain = run(images, indices, norm, nullptr, 3, 1);
  int full_squares = 0;
  double mean_zeros = 0;
  for (int b = 0; b < n; ++b) {
    int y0 = h, y1 = -1, x0 = w, x1 = -1;
    for (int c = 0; c < 3; ++c) {
      int zeros = 0;
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) {
          const float v = out_at(out, images, b, c, y, x);
          if (v == 0.0f) {
            ++zeros;
            y0 = std::min(y0, y);
            y1 = std::max(y1, y);
            x0 = std::min(x0, x);
            x1 = std::max(x1, x);
          } else {
            ASSERT_EQ(v, out_at(plain, images, b, c, y, x)) << "Cutout changed a pixel outside its square";
          }
        }
      ASSERT_GT(zeros, 0);
      ASSERT_LE(zeros, side * side);
      // The zeros form the full rectangle [y0, y1] x [x0, x1] (same in every channel, checked below).
      ASSERT_EQ(zeros, (y1 - y0 + 1) * (x1 - x0 + 1));
      if (c == 0) mean_zeros += zeros;
    }
    const int height = y1 - y0 + 1, width = x1 - x0 + 1;
    ASSERT_LE(height, side);
    ASSERT_LE(width, side);
    // A square shorter than `side` must have been clipped by a border.
    if (height < side) ASSERT_TRUE(y0 == 0 || y1 == h - 1);
    if (width < side) ASSERT_TRUE(x0 == 0 || x1 == w - 1);
    full_squares += height == side && width == side;
  }
  // Centre uniform on 32x32, box rows [cy-8, cy+8): unclipped iff 8 <= cy <= 24 (17 of 32 rows),
  // so P(full square) = (17/32)^2 = 0.282 and E[zeros] = (sum over cy of clipped height / 32)^2.
  EXPECT_NEAR(full_squares / static_cast<double>(n), 0.2822, 0.05);
  double expected_height = 0;
  for (int cy = 0; cy < h; ++cy) expected_height += (std::min(h, cy + side / 2) - std::max(0, cy - side / 2)) / 32.0;
  EXPECT_NEAR(mean_zeros / n, expected_height * expected_height, 10.0);
}

/// An independent, literal implementation of NOTE [Augmentation order] for one example.
std::vector<float> reference_augment(const Images& images, int64_t index, const Norm& norm, const AugmentSpec& spec,
                                     const ExampleAugmentation& a) {
  const int h = images.h, w = images.w, p = spec.padding;
  std::vector<float> out(static_cast<size_t>(images.c) * h * w);
  for (int c = 0; c < images.c; ++c) {
    // 1. zero-pad, 2. crop at (p + dy, p + dx)
    std::vector<int> padded((h + 2 * p) * (w + 2 * p), 0);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) padded[(y + p) * (w + 2 * p) + x + p] = images.at(index, c, y, x);
    std::vector<int> cropped(h * w);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) cropped[y * w + x] = padded[(y + p + a.dy) * (w + 2 * p) + x + p + a.dx];
    // 3. flip, 4. normalize
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const int v = cropped[y * w + (a.flip ? w - 1 - x : x)];
        out[(c * h + y) * w + x] = expected_normalized(static_cast<uint8_t>(v), norm.mean[c], norm.std[c]);
      }
    // 5. cutout in normalized space
    for (int y = a.cutout_y0; y < a.cutout_y1; ++y)
      for (int x = a.cutout_x0; x < a.cutout_x1; ++x) out[(c * h + y) * w + x] = 0.0f;
  }
  return out;
}

TEST(AugmentKernel, FullCifarAugmentationMatchesALiteralReference) {
  const Images images = random_images(300, 3, 32, 32, 14);
  const Norm norm = cifar_norm();
  std::vector<int64_t> indices(300);
  for (int i = 0; i < 300; ++i) indices[i] = 299 - i;
  const AugmentSpec spec = cifar_spec();
  const std::vector<float> out = run(images, indices, norm, &spec, 2024, 9);
  const size_t image_size = 3 * 32 * 32;
  for (size_t b = 0; b < indices.size(); ++b) {
    const ExampleAugmentation a = draw_augmentation(spec, 2024, 9, indices[b], 32, 32);
    ASSERT_LE(a.cutout_y1 - a.cutout_y0, 16);
    const std::vector<float> expected = reference_augment(images, indices[b], norm, spec, a);
    ASSERT_TRUE(std::equal(expected.begin(), expected.end(), out.begin() + b * image_size)) << "example " << indices[b];
  }
}

TEST(AugmentKernel, CutoutBoxFollowsTheReferenceFormulaForEvenSides) {
  // Reference (DeVries & Taylor): rows [clip(cy - len/2), clip(cy + len/2)).
  // The centre (cy, cx) is uniform over all 32 x 32 pixels: recovered from an unclipped edge (with
  // side 16 on 32 pixels one edge of each axis is always unclipped), its values must cover exactly
  // 0..31 with counts that pass a chi-square test (31 degrees of freedom, 61.1 at p = 0.001; the
  // draws are fixed by the seed). A centre drawn from 31 or 33 values fails one of these.
  const AugmentSpec spec = cutout_only(16);
  constexpr int kDraws = 6400;
  std::array<int, 32> rows{}, cols{};
  const auto centre = [](int lo, int hi) { return lo > 0 ? lo + 8 : hi - 8; };
  for (int64_t index = 0; index < kDraws; ++index) {
    const ExampleAugmentation a = draw_augmentation(spec, 1, 0, index, 32, 32);
    ASSERT_TRUE(a.cutout_y0 > 0 || a.cutout_y1 < 32);
    ASSERT_TRUE(a.cutout_x0 > 0 || a.cutout_x1 < 32);
    const int cy = centre(a.cutout_y0, a.cutout_y1), cx = centre(a.cutout_x0, a.cutout_x1);
    // Rows [clip(cy - 8), clip(cy + 8)): both edges follow from the centre.
    ASSERT_EQ(a.cutout_y0, std::max(0, cy - 8)) << index;
    ASSERT_EQ(a.cutout_y1, std::min(32, cy + 8)) << index;
    ASSERT_EQ(a.cutout_x0, std::max(0, cx - 8)) << index;
    ASSERT_EQ(a.cutout_x1, std::min(32, cx + 8)) << index;
    ASSERT_TRUE(cy >= 0 && cy < 32 && cx >= 0 && cx < 32) << cy << " " << cx;
    ++rows[cy];
    ++cols[cx];
  }
  double chi_rows = 0, chi_cols = 0;
  const double expected = kDraws / 32.0;
  for (int v = 0; v < 32; ++v) {
    EXPECT_GT(rows[v], 0) << "row centre " << v << " never drawn";
    EXPECT_GT(cols[v], 0) << "column centre " << v << " never drawn";
    chi_rows += (rows[v] - expected) * (rows[v] - expected) / expected;
    chi_cols += (cols[v] - expected) * (cols[v] - expected) / expected;
  }
  EXPECT_LT(chi_rows, 61.1);
  EXPECT_LT(chi_cols, 61.1);
}

TEST(AugmentKernel, SameSeedEpochIndexGivesIdenticalOutputAndDifferentOnesDiffer) {
  const Images images = random_images(64, 3, 32, 32, 15);
  std::vector<int64_t> indices(64);
  for (int i = 0; i < 64; ++i) indices[i] = i;
  const AugmentSpec spec = cifar_spec();
  const Norm norm = cifar_norm();
  const std::vector<float> first = run(images, indices, norm, &spec, 100, 4);
  EXPECT_EQ(first, run(images, indices, norm, &spec, 100, 4));
  const size_t image_size = 3 * 32 * 32;
  auto differing_examples = [&](const std::vector<float>& other) {
    int count = 0;
    for (size_t b = 0; b < indices.size(); ++b)
      count += !std::equal(first.begin() + b * image_size, first.begin() + (b + 1) * image_size, other.begin() + b * image_size);
    return count;
  };
  // With 81 offsets x 2 flips x 1024 centres, two draws coincide with probability < 1e-4.
  EXPECT_GE(differing_examples(run(images, indices, norm, &spec, 101, 4)), 60);
  EXPECT_GE(differing_examples(run(images, indices, norm, &spec, 100, 5)), 60);
  // A different example index gets a different draw even for the same image content.
  Images twins = images;
  std::copy(twins.pixels.begin(), twins.pixels.begin() + image_size, twins.pixels.begin() + image_size);
  const std::vector<float> twin_out = run(twins, {0, 1}, norm, &spec, 100, 4);
  EXPECT_FALSE(std::equal(twin_out.begin(), twin_out.begin() + image_size, twin_out.begin() + image_size));
}

TEST(AugmentKernel, ResultIndependentOfBatchCompositionAndThreadCount) {
  const Images images = random_images(50, 3, 32, 32, 16);
  const AugmentSpec spec = cifar_spec();
  const Norm norm = cifar_norm();
  const size_t image_size = 3 * 32 * 32;
  const std::vector<int64_t> big = {3, 49, 17, 0, 17, 22, 8};
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const std::vector<float> single_thread = run(images, big, norm, &spec, 9, 1);
  omp_set_num_threads(std::max(2, saved_threads));
  const std::vector<float> multi_thread = run(images, big, norm, &spec, 9, 1);
  omp_set_num_threads(saved_threads);
  EXPECT_EQ(single_thread, multi_thread);
  for (size_t b = 0; b < big.size(); ++b) {
    const std::vector<float> alone = run(images, {big[b]}, norm, &spec, 9, 1);
    EXPECT_TRUE(std::equal(alone.begin(), alone.end(), multi_thread.begin() + b * image_size)) << "position " << b;
  }
}

TEST(AugmentKernel, EachAugmentationKeepsItsDrawWhenOthersAreSwitchedOff) {
  const AugmentSpec all = cifar_spec();
  for (int64_t index = 0; index < 200; ++index) {
    const ExampleAugmentation a = draw_augmentation(all, 77, 3, index, 32, 32);
    const ExampleAugmentation crop = draw_augmentation(crop_only(4), 77, 3, index, 32, 32);
    const ExampleAugmentation flip = draw_augmentation(flip_only(), 77, 3, index, 32, 32);
    const ExampleAugmentation cut = draw_augmentation(cutout_only(16), 77, 3, index, 32, 32);
    EXPECT_EQ(a.dy, crop.dy);
    EXPECT_EQ(a.dx, crop.dx);
    EXPECT_EQ(a.flip, flip.flip);
    EXPECT_EQ(a.cutout_y0, cut.cutout_y0);
    EXPECT_EQ(a.cutout_x1, cut.cutout_x1);
    EXPECT_EQ(crop.flip, false);
    EXPECT_EQ(crop.cutout_y0, crop.cutout_y1);  // no cutout box
  }
}

}  // namespace
}  // namespace bitrobust::kernels
