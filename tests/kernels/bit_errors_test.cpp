// Properties of the bit error kernels (NOTE [Bit error sampling]) and of det_log
// (NOTE [Deterministic math]), without Torch.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "bitrobust/bits/bit_errors_kernels.h"
#include "bitrobust/common/detmath.h"
#include "bitrobust/common/error.h"
#include "bitrobust/quant/quantize_kernels.h"

namespace bitrobust::bits {
namespace {

// ---------------------------------------------------------------------------------------------
// det_log

TEST(DetLogKernel, MatchesStdLogOverAllMagnitudes) {
  std::mt19937_64 rng(12345);
  double worst = 0.0;
  for (int biased = 1; biased < 2047; ++biased) {  // every binade of the normal doubles
    for (int k = 0; k < 40; ++k) {
      const uint64_t bits = (static_cast<uint64_t>(biased) << 52) | (rng() & 0x000FFFFFFFFFFFFFull);
      double x;
      std::memcpy(&x, &bits, sizeof x);
      const double expected = std::log(x);
      const double got = det_log(x);
      const double err = expected == 0.0 ? std::fabs(got) : std::fabs(got - expected) / std::fabs(expected);
      worst = std::max(worst, err);
      ASSERT_LE(err, 1e-14) << "x = " << x << " (" << std::hexfloat << x << ")";
    }
  }
  RecordProperty("worst_relative_error", std::to_string(worst));
}

TEST(DetLogKernel, SubnormalsAndNearOne) {
  std::mt19937_64 rng(7);
  for (int k = 0; k < 2000; ++k) {  // subnormals
    const uint64_t bits = (rng() & 0x000FFFFFFFFFFFFFull) | 1u;
    double x;
    std::memcpy(&x, &bits, sizeof x);
    ASSERT_LE(std::fabs(det_log(x) - std::log(x)), 1e-14 * std::fabs(std::log(x))) << std::hexfloat << x;
  }
  for (int k = 1; k < 2000; ++k) {  // near 1 from both sides: the result is tiny, relative error still small
    const double x_up = 1.0 + k * DBL_EPSILON * 3.7, x_down = 1.0 - k * DBL_EPSILON * 1.3;
    ASSERT_LE(std::fabs(det_log(x_up) - std::log(x_up)), 1e-14 * std::fabs(std::log(x_up))) << x_up;
    ASSERT_LE(std::fabs(det_log(x_down) - std::log(x_down)), 1e-14 * std::fabs(std::log(x_down))) << x_down;
  }
  for (double x : {1.0, 2.0, 0.5, M_SQRT2, M_SQRT1_2, std::nextafter(M_SQRT2, 0.0), 10.0, 1e-300, 1e300,
                   DBL_MAX, DBL_MIN, std::numeric_limits<double>::denorm_min(), 0.5 / 9007199254740992.0,
                   1.0 - 0.5 / 9007199254740992.0}) {
    EXPECT_LE(std::fabs(det_log(x) - std::log(x)), 1e-14 * std::fabs(std::log(x))) << x;
  }
  EXPECT_EQ(det_log(1.0), 0.0);
  EXPECT_EQ(det_log(0.0), -std::numeric_limits<double>::infinity());
  EXPECT_EQ(det_log(std::numeric_limits<double>::infinity()), std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isnan(det_log(-1.0)));
  EXPECT_TRUE(std::isnan(det_log(std::numeric_limits<double>::quiet_NaN())));
}

TEST(DetLogKernel, ResultsAreFrozen) {
  // Patterns depend on det_log's last bits (NOTE [Deterministic math]): its results over every
  // binade, subnormals and the sampler's inputs (53-bit uniforms) must never change. The digest
  // was taken from the integer-exponent version of commit 676ef78.
  std::mt19937_64 rng(99);
  uint64_t digest = 0xCBF29CE484222325ull;
  auto add = [&](double x) {
    const double y = det_log(x);
    uint64_t bits;
    std::memcpy(&bits, &y, sizeof bits);
    for (int byte = 0; byte < 8; ++byte) {
      digest ^= (bits >> (8 * byte)) & 0xFF;
      digest *= 0x100000001B3ull;
    }
  };
  for (int biased = 0; biased < 2047; ++biased) {
    for (int k = 0; k < 20; ++k) {
      const uint64_t bits = (static_cast<uint64_t>(biased) << 52) | (rng() & 0x000FFFFFFFFFFFFFull);
      double x;
      std::memcpy(&x, &bits, sizeof x);
      add(x);
    }
  }
  for (int k = 0; k < 100000; ++k) add(uniform_open01(static_cast<uint32_t>(rng()), static_cast<uint32_t>(rng())));
  EXPECT_EQ(digest, 0x4CDA3BCBDA1F2497ull) << std::hex << digest;
}

// ---------------------------------------------------------------------------------------------
// Helpers

BitErrorParams symmetric(int bits, double p) { return make_bit_error_params(0, bits, p, p); }

template <typename T>
int64_t inject(const std::vector<T>& clean, std::vector<T>& out, const BitErrorParams& params, uint64_t seed,
               int64_t param_index = 0) {
  out.resize(clean.size());
  InjectTask task;
  task.clean = clean.data();
  task.out = out.data();
  task.numel = static_cast<int64_t>(clean.size());
  task.param_index = param_index;
  task.elem_bytes = sizeof(T);
  task.params = params;
  return inject_bit_errors_cpu(&task, 1, seed);
}

template <typename T>
std::vector<T> random_codes(int64_t n, int bits, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<T> codes(n);
  const uint64_t mask = bits >= 64 ? ~0ull : ((1ull << bits) - 1);
  for (auto& c : codes) c = static_cast<T>(rng() & mask);
  return codes;
}

int popcount64(uint64_t x) { return __builtin_popcountll(x); }

template <typename T>
int64_t total_popcount(const std::vector<T>& v) {
  int64_t total = 0;
  for (T x : v) total += popcount64(x);
  return total;
}

// Upper and lower 1e-4 quantiles (two-sided, z = 3.72) of chi-square with df degrees of freedom
// (Wilson-Hilferty); with fixed seeds a failure means a real deviation from the model.
double chi2_upper(int df) {
  const double a = 2.0 / (9.0 * df);
  return df * std::pow(1.0 - a + 3.72 * std::sqrt(a), 3);
}
double chi2_lower(int df) {
  const double a = 2.0 / (9.0 * df);
  return df * std::pow(std::max(0.0, 1.0 - a - 3.72 * std::sqrt(a)), 3);
}
// Sum over bins of (O - n p)^2 / (n p (1 - p)) for independent Binomial(n_bin, p) bin counts:
// chi-square with as many degrees of freedom as bins (p is known, not estimated).
double binomial_dispersion(const std::vector<int64_t>& observed, const std::vector<double>& trials, double p) {
  double stat = 0.0;
  for (size_t b = 0; b < observed.size(); ++b) {
    const double mean = trials[b] * p, var = trials[b] * p * (1 - p);
    stat += (observed[b] - mean) * (observed[b] - mean) / var;
  }
  return stat;
}

void expect_binomial_bins(const char* what, const std::vector<int64_t>& observed, const std::vector<double>& trials,
                          double p) {
  const double stat = binomial_dispersion(observed, trials, p);
  const int df = static_cast<int>(observed.size());
  EXPECT_LT(stat, chi2_upper(df)) << what << " p=" << p;
  EXPECT_GT(stat, chi2_lower(df)) << what << " p=" << p;
}


// ---------------------------------------------------------------------------------------------
// Determinism

TEST(BitErrorKernel, SameResultForOneAndTwoThreads) {
  const auto clean = random_codes<uint8_t>(300007, 8, 1);
  for (double p : {1e-3, 0.05, 0.4}) {
    std::vector<uint8_t> one, two;
    omp_set_num_threads(1);
    const int64_t c1 = inject(clean, one, symmetric(8, p), 42, 3);
    omp_set_num_threads(2);
    const int64_t c2 = inject(clean, two, symmetric(8, p), 42, 3);
    EXPECT_EQ(c1, c2) << "p=" << p;
    EXPECT_TRUE(one == two) << "p=" << p;
    EXPECT_GT(c1, 0);
  }
}

TEST(BitErrorKernel, MultiTensorCallIsOrderIndependentAndMatchesSingleCalls) {
  const auto a = random_codes<uint8_t>(5000, 4, 2);
  const auto b = random_codes<uint16_t>(70001, 12, 3);
  const auto c = random_codes<uint32_t>(999, 20, 4);
  const uint64_t seed = 77;
  const double p = 0.02;
  std::vector<uint8_t> a_single, a_multi(a.size()), a_rev(a.size());
  std::vector<uint16_t> b_single, b_multi(b.size()), b_rev(b.size());
  std::vector<uint32_t> c_single, c_multi(c.size()), c_rev(c.size());
  const int64_t single = inject(a, a_single, symmetric(4, p), seed, 0) + inject(b, b_single, symmetric(12, p), seed, 1) +
                         inject(c, c_single, symmetric(20, p), seed, 2);
  auto task = [](const void* clean, void* out, int64_t n, int64_t index, int eb, int bits, double p) {
    InjectTask t;
    t.clean = clean; t.out = out; t.numel = n; t.param_index = index; t.elem_bytes = eb;
    t.params = make_bit_error_params(0, bits, p, p);
    return t;
  };
  std::vector<InjectTask> tasks = {task(a.data(), a_multi.data(), a.size(), 0, 1, 4, p),
                                   task(b.data(), b_multi.data(), b.size(), 1, 2, 12, p),
                                   task(c.data(), c_multi.data(), c.size(), 2, 4, 20, p)};
  EXPECT_EQ(inject_bit_errors_cpu(tasks.data(), 3, seed), single);
  std::vector<InjectTask> reversed = {task(c.data(), c_rev.data(), c.size(), 2, 4, 20, p),
                                      task(b.data(), b_rev.data(), b.size(), 1, 2, 12, p),
                                      task(a.data(), a_rev.data(), a.size(), 0, 1, 4, p)};
  EXPECT_EQ(inject_bit_errors_cpu(reversed.data(), 3, seed), single);
  EXPECT_TRUE(a_single == a_multi && a_single == a_rev);
  EXPECT_TRUE(b_single == b_multi && b_single == b_rev);
  EXPECT_TRUE(c_single == c_multi && c_single == c_rev);
}

TEST(BitErrorKernel, PatternDependsOnSeedAndParamIndexButNotOnLength) {
  const std::vector<uint8_t> zeros(1000, 0), shorter(700, 0);
  std::vector<uint8_t> out, out_short, other_seed, other_param;
  inject(zeros, out, symmetric(8, 0.05), 5, 1);
  inject(shorter, out_short, symmetric(8, 0.05), 5, 1);
  EXPECT_TRUE(std::equal(out_short.begin(), out_short.end(), out.begin()));
  inject(zeros, other_seed, symmetric(8, 0.05), 6, 1);
  inject(zeros, other_param, symmetric(8, 0.05), 5, 2);
  EXPECT_FALSE(out == other_seed);
  EXPECT_FALSE(out == other_param);
}

TEST(BitErrorKernel, InPlaceEqualsOutOfPlace) {
  auto codes = random_codes<uint16_t>(12345, 10, 9);
  std::vector<uint16_t> out;
  const int64_t changed = inject(codes, out, symmetric(10, 0.03), 11, 4);
  InjectTask task;
  task.clean = codes.data(); task.out = codes.data(); task.numel = codes.size(); task.param_index = 4;
  task.elem_bytes = 2; task.params = symmetric(10, 0.03);
  EXPECT_EQ(inject_bit_errors_cpu(&task, 1, 11), changed);
  EXPECT_TRUE(codes == out);
}

// The stream itself is part of the product: results record their seeds, and a seed must keep
// giving the same chip after any optimisation of the sampler. These digests were taken from the
// scalar sampler (commit 676ef78); a change here changes every published pattern.
uint64_t fnv1a(uint64_t h, uint64_t value) {
  for (int byte = 0; byte < 8; ++byte) {
    h ^= (value >> (8 * byte)) & 0xFF;
    h *= 0x100000001B3ull;
  }
  return h;
}

struct FrozenCase {
  int bit_lo, bit_count;
  double rate_0to1, rate_1to0;
  uint64_t seed;
  int64_t param_index, numel;
  size_t count;
  uint64_t digest;
};

TEST(BitErrorKernel, StreamIsFrozenOnEveryInstructionSet) {
  const FrozenCase cases[] = {
      {0, 8, 0.0001, 0.0001, 100, 0, 1048576, 877, 0xD0DDFF7B869EA84Cull},
      {0, 8, 0.001, 0.001, 101, 3, 300001, 2337, 0xCD242DF5837932E6ull},
      {0, 8, 0.01, 0.01, 149, 53, 250000, 20086, 0x4C0AACDFEB14672Eull},
      {0, 8, 0.1, 0.1, 7, 1, 20000, 15868, 0xE513595EB561E65Dull},
      {0, 8, 0.5, 0.5, 8, 2, 5000, 19981, 0xFD9696D951B66DB0ull},
      {0, 4, 0.01, 0.01, 9, 4, 100003, 4072, 0x95814E5CE31E27D6ull},
      {7, 1, 0.05, 0.05, 10, 5, 100000, 5059, 0x2F0FCC1AAF15BACBull},
      {0, 12, 0.02, 0.002, 11, 6, 60000, 14663, 0x9120AADFACDC1A02ull},
      {0, 32, 0.01, 0.01, 12, 7, 30000, 9680, 0x4D8195C43EFA2DD6ull},
      {0, 8, 0, 0.02, 13, 8, 70000, 11003, 0xEFE6390FA587D30Eull},
  };
  // NOTE [Sampler instruction sets]: every vector level this CPU runs gives these same bits.
  const std::string best = cpu_sampler_isa();
  ASSERT_FALSE(cpu_sampler_isas().empty());
  EXPECT_EQ(cpu_sampler_isas().front(), best);
  EXPECT_EQ(cpu_sampler_isas().back(), "baseline");
  for (const std::string& isa : cpu_sampler_isas()) {
    SCOPED_TRACE("instruction set " + isa);
    set_cpu_sampler_isa(isa);
    EXPECT_EQ(cpu_sampler_isa(), isa);
    for (const FrozenCase& c : cases) {
      const BitErrorParams params = make_bit_error_params(c.bit_lo, c.bit_count, c.rate_0to1, c.rate_1to0);
      const std::vector<SelectedBit> bits = draw_selected_bits(c.numel, params, c.seed, c.param_index);
      uint64_t digest = 0xCBF29CE484222325ull;
      for (const SelectedBit& b : bits) {
        digest = fnv1a(digest, (static_cast<uint64_t>(b.element) << 16) | (static_cast<uint64_t>(b.bit) << 8) |
                                   static_cast<uint64_t>(b.kind));
      }
      EXPECT_EQ(bits.size(), c.count) << "seed " << c.seed;
      EXPECT_EQ(digest, c.digest) << "seed " << c.seed;
    }
    // The injection kernels (their own instantiations of the sampler) on 8- and 16-bit containers.
    const std::vector<uint8_t> codes8 = random_codes<uint8_t>(1 << 19, 8, 21);
    const std::vector<uint16_t> codes16 = random_codes<uint16_t>(1 << 17, 12, 22);
    const uint64_t expected[] = {0xD3BF304DFBAC9BC7ull, 0xFD3A71B0CC6F4555ull, 0xBBFD016D4968ADA7ull,
                                 0x678F92119C866CDCull, 0x51782942AFA05968ull, 0x8E607F08F8493ED8ull};
    int k = 0;
    for (double p : {1e-4, 1e-2, 0.2}) {
      std::vector<uint8_t> out8;
      std::vector<uint16_t> out16;
      inject(codes8, out8, symmetric(8, p), 100 + k, 1);
      inject(codes16, out16, make_bit_error_params(0, 12, p, p / 3), 200 + k, 2);
      uint64_t d8 = 0xCBF29CE484222325ull, d16 = d8;
      for (uint8_t x : out8) d8 = fnv1a(d8, x);
      for (uint16_t x : out16) d16 = fnv1a(d16, x);
      EXPECT_EQ(d8, expected[2 * k]) << "p=" << p;
      EXPECT_EQ(d16, expected[2 * k + 1]) << "p=" << p;
      ++k;
    }
  }
  set_cpu_sampler_isa(best);
  RecordProperty("instruction_sets_checked", static_cast<int>(cpu_sampler_isas().size()));
}

TEST(BitErrorKernel, LanesAheadAndListSizeNeverChangeTheResult) {
  // The sampler's defaults (4 lanes, shrinking batches, a list before the bitmap) and the CPU's
  // configuration (8 full lanes and a bitmap), run here on the host, must visit the same bits with
  // the same sums, in the same order.
  struct Visit {
    int32_t element, bit;
    double s;
    bool operator==(const Visit& o) const { return element == o.element && bit == o.bit && s == o.s; }
  };
  for (double p : {1e-5, 1e-3, 2e-2, 0.3, 1.0}) {
    for (int bits : {1, 8, 16}) {
      const BitErrorParams params = make_bit_error_params(0, bits, p, p / 2);
      for (int64_t chunk = 0; chunk < 300; ++chunk) {
        const uint64_t key = chunk_key(param_key_prefix(77, 3), chunk);
        std::vector<Visit> cuda_like, cpu_like, one_lane;
        for_each_selected_bit<chunk_bitmap_words(16), 16, 4, false>(
            params, key, [&](int32_t e, int32_t b, double s) { cuda_like.push_back({e, b, s}); });
        for_each_selected_bit<chunk_bitmap_words(16), 0, 8, true>(
            params, key, [&](int32_t e, int32_t b, double s) { cpu_like.push_back({e, b, s}); });
        for_each_selected_bit<chunk_bitmap_words(16), 4, 1, true>(
            params, key, [&](int32_t e, int32_t b, double s) { one_lane.push_back({e, b, s}); });
        ASSERT_TRUE(cuda_like == cpu_like) << "p=" << p << " bits=" << bits << " chunk " << chunk;
        ASSERT_TRUE(one_lane == cpu_like) << "p=" << p << " bits=" << bits << " chunk " << chunk;
      }
    }
  }
}

// The CUDA kernel's flow (flip_chunk_warp in src/kernels/cuda/bit_errors_cuda.cu), with the lanes of
// a group run one after the other: empty-chunk check, cleared bitmap, then rounds of group_draw by
// every lane and group_select by one. NOTE [Group sampler]
template <int kGroup>
std::vector<std::tuple<int32_t, int32_t, double>> group_rounds(const BitErrorParams& params, uint64_t key) {
  std::vector<std::tuple<int32_t, int32_t, double>> visits;
  if (!params.active() || first_chunk_uniform(key) <= params.empty_chunk_v_max) return visits;
  const uint32_t n = static_cast<uint32_t>(kChunkElements) * static_cast<uint32_t>(params.bit_count);
  std::vector<uint64_t> words(n >> 6, 0);
  BitmapView chosen{words.data()};
  GroupRound<kGroup> round{};
  double s = 0.0;
  for (uint32_t j0 = 0;; j0 += kGroup) {
    for (int lane = 0; lane < kGroup; ++lane) group_draw(round, lane, key, j0, n);
    group_select(round, key, j0, n, params.threshold_max(), s, chosen);
    for (int lane = 0; lane < round.count; ++lane) {
      const uint32_t b = round.position[lane];
      visits.emplace_back(static_cast<int32_t>(b & (kChunkElements - 1)),
                          params.bit_lo + static_cast<int32_t>(b >> kChunkShift), round.s[lane]);
    }
    if (round.done) break;
  }
  return visits;
}

TEST(BitErrorKernel, GroupRoundsSelectTheSameBits) {
  // Rates from empty chunks to every bit (p = 1: t_max = inf, all n bits in n / kGroup rounds, with
  // many rejected position attempts), bit counts up to the 32-bit container, both directions' rates.
  int64_t compared = 0;
  for (double p : {1e-5, 1e-3, 1e-2, 0.3, 1.0}) {
    for (int bits : {1, 3, 8, 16, 32}) {
      const BitErrorParams params = make_bit_error_params(32 - bits, bits, p, p / 3);
      for (int64_t chunk = 0; chunk < (p == 1.0 ? 8 : 200); ++chunk) {
        const uint64_t key = chunk_key(param_key_prefix(91, 4), chunk);
        std::vector<std::tuple<int32_t, int32_t, double>> reference;
        for_each_selected_bit<chunk_bitmap_words(32), 0, 8, true>(
            params, key, [&](int32_t e, int32_t b, double s) { reference.emplace_back(e, b, s); });
        ASSERT_TRUE(group_rounds<32>(params, key) == reference) << "p=" << p << " bits=" << bits << " chunk " << chunk;
        ASSERT_TRUE(group_rounds<7>(params, key) == reference) << "p=" << p << " bits=" << bits << " chunk " << chunk;
        compared += static_cast<int64_t>(reference.size());
      }
    }
  }
  EXPECT_GT(compared, 100000);  // (the comparison is not vacuous)
}

TEST(BitErrorKernel, ChunksSideBySideSelectTheSameBits) {
  // NOTE [Chunks side by side]: each chunk's visits (bits and sums, in order) are those of the
  // chunk drawn alone, for items of every size, lanes that do and do not divide the running chunks,
  // rates from empty chunks to every bit, and bit counts up to the 32-bit container.
  // As the CPU kernels call it: kCpuItemChunks chunks, the first words computed only up to the
  // item's chunks rounded up to whole vectors of 8 (the rest poisoned: a chunk read from there
  // would select bits).
  constexpr int kChunks = static_cast<int>(kCpuItemChunks);
  using Visits = std::vector<std::tuple<int32_t, int32_t, double>>;
  int64_t compared = 0;
  for (double p : {1e-5, 1e-3, 4e-3, 2e-2, 0.3, 1.0}) {
    for (int bits : {1, 3, 8, 16, 32}) {
      const BitErrorParams params = make_bit_error_params(32 - bits, bits, p, p / 3);
      for (int num_chunks : {kChunks, kChunks - 7, 13, 1}) {
        if (p == 1.0 && num_chunks > 13) continue;  // (every bit: slow, and no more to learn)
        for (int64_t item = 0; item < (p == 1.0 ? 1 : 3); ++item) {
          uint64_t keys[kChunks];
          uint32_t first_words[4][kChunks];
          const int computed = (num_chunks + 7) / 8 * 8;
          for (int k = 0; k < kChunks; ++k) {
            keys[k] = chunk_key(param_key_prefix(92, 5), item * kChunks + k);
            const Philox4x32 r = philox4x32(0, 0, keys[k]);
            for (int w = 0; w < 4; ++w) first_words[w][k] = k < computed ? r.v[w] : 0xFFFFFFFFu;
          }
          std::vector<Visits> side_by_side8(kChunks), side_by_side4(kChunks);
          for_each_selected_bit_side_by_side<chunk_bitmap_words(32), kChunks, 8>(
              params, num_chunks, keys, first_words,
              [&](int k, int32_t e, int32_t b, double s) { side_by_side8[k].emplace_back(e, b, s); });
          for_each_selected_bit_side_by_side<chunk_bitmap_words(32), kChunks, 4>(
              params, num_chunks, keys, first_words,
              [&](int k, int32_t e, int32_t b, double s) { side_by_side4[k].emplace_back(e, b, s); });
          for (int k = 0; k < kChunks; ++k) {
            Visits alone;
            if (k < num_chunks) {
              for_each_selected_bit<chunk_bitmap_words(32), 0, 8, true>(
                  params, keys[k], [&](int32_t e, int32_t b, double s) { alone.emplace_back(e, b, s); });
            }
            ASSERT_TRUE(side_by_side8[k] == alone) << "p=" << p << " bits=" << bits << " chunk " << k << " of " << num_chunks;
            ASSERT_TRUE(side_by_side4[k] == alone) << "p=" << p << " bits=" << bits << " chunk " << k << " of " << num_chunks;
            compared += static_cast<int64_t>(alone.size());
          }
        }
      }
    }
  }
  EXPECT_GT(compared, 100000);  // (the comparison is not vacuous)
}

TEST(BitErrorKernel, UnknownInstructionSetIsAnError) {
  try {
    set_cpu_sampler_isa("sse9");
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'sse9' is not an instruction set this CPU can run (" + cpu_sampler_isas().front()),
              std::string::npos)
        << e.what();
  }
}

TEST(BitErrorKernel, ChunkKeysAreMakeKeyOfSeedParamChunk) {
  for (uint64_t seed : {0ull, 1ull, 123456789ull}) {
    for (int64_t param : {0, 1, 53}) {
      for (int64_t chunk : {0, 1, 21477}) {
        EXPECT_EQ(chunk_key(param_key_prefix(seed, param), chunk), make_key(seed, param, chunk));
      }
    }
  }
}

TEST(BitErrorKernel, EmptyChunkShortcutNeverChangesTheResult) {
  // NOTE [Empty chunk shortcut]: the same codes with the shortcut disabled (v_max = 0).
  const auto clean = random_codes<uint8_t>(1 << 20, 8, 12);
  for (double p : {1e-12, 1e-9, 1e-6, 1e-4, 1e-2, 0.3, 1.0}) {
    for (int bits : {1, 8}) {
      BitErrorParams with = symmetric(bits, p), without = with;
      without.empty_chunk_v_max = 0.0;
      if (p < 1.0) EXPECT_GT(with.empty_chunk_v_max, 0.0);
      std::vector<uint8_t> a, b;
      EXPECT_EQ(inject(clean, a, with, 3, 1), inject(clean, b, without, 3, 1)) << p;
      EXPECT_TRUE(a == b) << "p=" << p;
    }
  }
  // The cut is below the exact probability (1-p)^n that a chunk is empty, and close to it.
  const double p = 1e-4, n = 2048;
  EXPECT_LT(symmetric(8, p).empty_chunk_v_max, std::pow(1 - p, n));
  EXPECT_GT(symmetric(8, p).empty_chunk_v_max, std::pow(1 - p, n) * (1 - 1e-8));
}

// ---------------------------------------------------------------------------------------------
// Nesting and bit ranges

TEST(BitErrorKernel, LowerRateFlipsAreSubsetOfHigherRateFlips) {
  const std::vector<uint8_t> zeros(40000, 0);
  const std::vector<double> rates = {1e-5, 1e-4, 1e-3, 5e-3, 1e-2, 0.05, 0.1, 0.3, 0.5, 0.9, 1.0};
  std::vector<uint8_t> previous(zeros.size(), 0);
  int64_t previous_count = 0;
  for (double p : rates) {
    std::vector<uint8_t> flipped;
    const int64_t count = inject(zeros, flipped, symmetric(8, p), 2024, 7);
    EXPECT_EQ(count, total_popcount(flipped));
    for (size_t i = 0; i < zeros.size(); ++i) {
      ASSERT_EQ(previous[i] & ~flipped[i], 0) << "p=" << p << " element " << i;
    }
    EXPECT_GE(count, previous_count);
    previous = flipped;
    previous_count = count;
  }
  // p = 1 flips every bit.
  EXPECT_EQ(previous_count, 8 * static_cast<int64_t>(zeros.size()));
}

TEST(BitErrorKernel, BitsAboveMAreNeverTouched) {
  for (int m : {1, 3, 4, 7}) {
    std::vector<uint8_t> clean = random_codes<uint8_t>(9999, 8, m);  // high bits deliberately set
    for (double p : {0.01, 0.5, 1.0}) {
      std::vector<uint8_t> out;
      inject(clean, out, symmetric(m, p), 1, 0);
      const uint8_t high = static_cast<uint8_t>(~((1u << m) - 1));
      for (size_t i = 0; i < clean.size(); ++i) {
        ASSERT_EQ((out[i] ^ clean[i]) & high, 0) << "m=" << m << " p=" << p;
        if (p == 1.0) ASSERT_EQ(out[i], clean[i] ^ static_cast<uint8_t>(~high));
      }
    }
  }
  const auto clean16 = random_codes<uint16_t>(5000, 16, 3);
  std::vector<uint16_t> out16;
  inject(clean16, out16, symmetric(11, 1.0), 1, 0);
  for (size_t i = 0; i < clean16.size(); ++i) ASSERT_EQ(out16[i], clean16[i] ^ 0x7FF);
}

TEST(BitErrorKernel, MsbOnlyAndLsbRestrictions) {
  const std::vector<uint8_t> zeros(200000, 0);
  const double p = 0.02;
  std::vector<uint8_t> msb, lsb;
  const int64_t msb_count = inject(zeros, msb, make_bit_error_params(6, 1, p, p), 3, 0);  // m = 7
  const int64_t lsb_count = inject(zeros, lsb, make_bit_error_params(0, 3, p, p), 3, 0);  // k = 3
  for (size_t i = 0; i < zeros.size(); ++i) {
    ASSERT_TRUE(msb[i] == 0 || msb[i] == 0x40);
    ASSERT_EQ(lsb[i] & ~0x07, 0);
  }
  const double n_msb = zeros.size(), n_lsb = 3.0 * zeros.size();
  EXPECT_NEAR(msb_count, n_msb * p, 5 * std::sqrt(n_msb * p * (1 - p)));
  EXPECT_NEAR(lsb_count, n_lsb * p, 5 * std::sqrt(n_lsb * p * (1 - p)));
  std::vector<int64_t> per_bit(3, 0);
  for (uint8_t x : lsb) {
    for (int b = 0; b < 3; ++b) per_bit[b] += (x >> b) & 1;
  }
  expect_binomial_bins("lsb bit positions", per_bit, std::vector<double>(3, n_msb), p);
}

// ---------------------------------------------------------------------------------------------
// Asymmetric rates and stuck-at faults

TEST(BitErrorKernel, AsymmetricRatesActOnlyInTheirDirection) {
  const int64_t n = 100000;
  const std::vector<uint16_t> zeros(n, 0), ones(n, 0x0FFF);  // m = 12
  const double p01 = 0.01, p10 = 0.05;
  const auto params = make_bit_error_params(0, 12, p01, p10);
  std::vector<uint16_t> from_zeros, from_ones;
  const int64_t up = inject(zeros, from_zeros, params, 8, 1);
  const int64_t down = inject(ones, from_ones, params, 8, 1);
  const double bits = 12.0 * n;
  EXPECT_NEAR(up, bits * p01, 5 * std::sqrt(bits * p01 * (1 - p01)));
  EXPECT_NEAR(down, bits * p10, 5 * std::sqrt(bits * p10 * (1 - p10)));
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(from_ones[i] & ~0x0FFF, 0);
    ASSERT_EQ(from_zeros[i] & ~0x0FFF, 0);
  }
  EXPECT_EQ(up, total_popcount(from_zeros));
  // The 0->1 errors are exactly the symmetric pattern at p01, the 1->0 ones that at p10 (same chip).
  std::vector<uint16_t> sym01, sym10;
  inject(zeros, sym01, symmetric(12, p01), 8, 1);
  inject(zeros, sym10, symmetric(12, p10), 8, 1);
  EXPECT_TRUE(from_zeros == sym01);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(from_ones[i], 0x0FFF ^ sym10[i]);
  // A zero 1->0 rate leaves all-ones codes alone.
  std::vector<uint16_t> untouched;
  EXPECT_EQ(inject(ones, untouched, make_bit_error_params(0, 12, 0.3, 0.0), 8, 1), 0);
  EXPECT_TRUE(untouched == ones);
}

TEST(BitErrorKernel, StuckAtFaultsForceTheSelectedBits) {
  const auto clean = random_codes<uint8_t>(150000, 6, 21);
  const std::vector<uint8_t> zeros(clean.size(), 0);
  const double p = 0.07;
  std::vector<uint8_t> selected, stuck0, stuck1;
  inject(zeros, selected, symmetric(6, p), 99, 2);
  const int64_t changed0 = inject(clean, stuck0, make_bit_error_params(0, 6, 0.0, p), 99, 2);
  const int64_t changed1 = inject(clean, stuck1, make_bit_error_params(0, 6, p, 0.0), 99, 2);
  int64_t expect0 = 0, expect1 = 0;
  for (size_t i = 0; i < clean.size(); ++i) {
    ASSERT_EQ(stuck0[i], clean[i] & ~selected[i]);
    ASSERT_EQ(stuck1[i], clean[i] | selected[i]);
    expect0 += popcount64(clean[i] & selected[i]);
    expect1 += popcount64(~clean[i] & selected[i] & 0x3F);
  }
  EXPECT_EQ(changed0, expect0);
  EXPECT_EQ(changed1, expect1);
  EXPECT_GT(changed0, 0);
}

// ---------------------------------------------------------------------------------------------
// Incremental injection (NOTE [Incremental injection])

// One tensor of an incremental injection with everything it points to.
template <typename T>
struct IncrementalTensor {
  std::vector<T> clean, out;
  std::vector<float> weights;
  std::vector<kernels::QuantRange> ranges;
  InjectDequantizeTask task;

  IncrementalTensor(int64_t n, int64_t channels, int bits, bool is_signed, int64_t param_index, uint64_t seed)
      : clean(random_codes<T>(n, bits, seed)), out(clean), weights(static_cast<size_t>(n)) {
    for (int64_t c = 0; c < channels; ++c) {
      ranges.push_back({-0.1f * static_cast<float>(c + 1), 0.05f * static_cast<float>(c + 2)});
    }
    task.inject.clean = clean.data();
    task.inject.out = out.data();
    task.inject.numel = n;
    task.inject.param_index = param_index;
    task.inject.elem_bytes = sizeof(T);
    task.weights = weights.data();
    task.channels = channels;
    task.ranges = ranges.data();
    task.format.bits = bits;
    task.format.is_signed = is_signed;
    task.format.asymmetric = !is_signed;
    const kernels::DequantizeTask dequantize{clean.data(), n, channels, ranges.data(), task.format, weights.data()};
    kernels::dequantize_many_cpu(&dequantize, 1);  // clean weights, as the state requires
  }

  // The dense path's codes, weights and count for the task's current parameters.
  void expect_dense_result(int64_t changed, uint64_t seed, const std::string& what) const {
    std::vector<T> codes;
    const int64_t expected_changed = inject(clean, codes, task.inject.params, seed, task.inject.param_index);
    std::vector<float> expected(weights.size());
    const kernels::DequantizeTask dequantize{codes.data(), task.inject.numel, task.channels, ranges.data(), task.format,
                                             expected.data()};
    kernels::dequantize_many_cpu(&dequantize, 1);
    EXPECT_EQ(changed, expected_changed) << what;
    EXPECT_TRUE(out == codes) << what;
    EXPECT_EQ(std::memcmp(weights.data(), expected.data(), weights.size() * sizeof(float)), 0) << what;
  }

  // Listed elements of a task that starts at work item `first_item`: each element that differs,
  // once, with its clean code (offset in the low 16 bits, clean code in the high 16).
  void expect_listed(const IncrementalInjectState& state, size_t first_item, const std::string& what) const {
    const int64_t item_elements = kCpuItemChunks * kChunkElements, n = task.inject.numel;
    for (int64_t item = 0; item * item_elements < n; ++item) {
      std::vector<uint32_t> differing;
      for (int64_t i = item * item_elements; i < std::min(n, (item + 1) * item_elements); ++i) {
        if (out[i] != clean[i]) {
          differing.push_back(static_cast<uint32_t>(i - item * item_elements) | static_cast<uint32_t>(clean[i]) << 16);
        }
      }
      std::vector<uint32_t> listed = state.touched[first_item + static_cast<size_t>(item)];
      std::sort(listed.begin(), listed.end(), [](uint32_t a, uint32_t b) { return (a & 0xFFFFu) < (b & 0xFFFFu); });
      EXPECT_EQ(listed, differing) << what << " item " << item;
    }
  }
};

// Two tensors (6-bit codes in bytes, 16-bit codes, per-channel ranges cutting through chunks) and
// an empty one, injected incrementally pattern after pattern, dense and sparse patterns in every
// order (the sparse ones up to 1.4% of the elements changed, near the switch at 2%), one and two
// threads in turn, on every instruction set the CPU has: after each pattern the codes, weights and
// count equal a dense injection and a full dequantization, and a sparse pattern lists each element
// it changed, once, with its clean code.
TEST(BitErrorKernel, IncrementalInjectionEqualsDenseInjectionThenDequantization) {
  IncrementalTensor<uint8_t> a(3000000, 6, 6, false, 4, 3);  // large enough for two threads at low rates
  IncrementalTensor<uint16_t> b(400001, 7, 16, true, 9, 5);  // 57,143 per channel; clean codes with bit 15 set
  InjectDequantizeTask empty = a.task;  // 0 elements, no pointers, no channels
  empty.inject = InjectTask{};
  empty.inject.param_index = 2;
  empty.weights = nullptr;
  empty.channels = 0;
  empty.ranges = nullptr;
  struct Rates {
    double r01, r10;
    bool msb;
  };
  const Rates steps[] = {{0.01, 0.01, false},    {0.0001, 0.0001, false}, {0.0002, 0.0002, false}, {0, 0, false},
                         {0.0005, 0.0005, false}, {0.0, 0.3, false},       {0.0001, 0.0001, false}, {0.5, 0.5, true},
                         {0.1, 0.1, false},       {0.0002, 0.0, false},    {0.0002, 0.0002, false}, {0.0008, 0.0008, false},
                         {0.002, 0.002, false},   {1.0, 1.0, true}};
  const std::string previous_isa = cpu_sampler_isa();
  const int threads = omp_get_max_threads();
  IncrementalInjectState state;  // one for all: each instruction set starts from the last one's pattern
  int64_t a_changed_twice = 0, b_changed_twice = 0;
  const int64_t item_elements = kCpuItemChunks * kChunkElements;
  const size_t a_items = static_cast<size_t>((3000000 + item_elements - 1) / item_elements);
  const size_t b_items = static_cast<size_t>((400001 + item_elements - 1) / item_elements);
  for (const std::string& isa : cpu_sampler_isas()) {
    set_cpu_sampler_isa(isa);
    int step = 0;
    for (const Rates& r : steps) {
      omp_set_num_threads(step % 2 + 1);
      const std::string what = isa + " step " + std::to_string(step);
      auto params = [&](int bits) {
        return make_bit_error_params(r.msb ? bits - 1 : 0, r.msb ? 1 : bits, r.r01, r.r10);
      };
      a.task.inject.params = params(6);
      b.task.inject.params = params(16);
      empty.inject.params = params(6);
      const InjectDequantizeTask tasks[] = {a.task, empty, b.task};
      const uint64_t seed = 7 + static_cast<uint64_t>(step++);
      const int64_t changed = inject_dequantize_incremental_cpu(tasks, 3, seed, state);
      std::vector<uint8_t> a_codes;
      const int64_t a_changed = inject(a.clean, a_codes, a.task.inject.params, seed, a.task.inject.param_index);
      a.expect_dense_result(a_changed, seed, what + " (a)");
      b.expect_dense_result(changed - a_changed, seed, what + " (b)");
      double expected = 0.0;
      for (const InjectDequantizeTask& t : {a.task, b.task}) {
        const BitErrorParams& p = t.inject.params;
        expected += p.active() ? static_cast<double>(t.inject.numel) * p.bit_count * std::min(p.threshold_max(), 1.0) : 0.0;
      }
      const bool sparse = expected * 50 < 3400001;
      EXPECT_EQ(state.dense, !sparse) << what;
      if (!sparse) continue;
      ASSERT_EQ(state.touched.size(), a_items + b_items) << what;
      a.expect_listed(state, 0, what + " (a)");
      b.expect_listed(state, a_items, what + " (b)");
      for (size_t i = 0; i < a.out.size(); ++i) a_changed_twice += __builtin_popcount(a.out[i] ^ a.clean[i]) >= 2;
      for (size_t i = 0; i < b.out.size(); ++i) b_changed_twice += __builtin_popcount(b.out[i] ^ b.clean[i]) >= 2;
    }
  }
  // Listed once even when a pattern changes two of its bits, in bytes and in 16-bit words.
  EXPECT_GT(a_changed_twice, 0);
  EXPECT_GT(b_changed_twice, 0);
  set_cpu_sampler_isa(previous_isa);
  omp_set_num_threads(threads);
}

TEST(BitErrorKernel, IncrementalInjectionChecksItsInputs) {
  std::vector<uint8_t> clean(1000, 3), out(1000, 3);
  std::vector<float> weights(1000);
  const kernels::QuantRange range{-1.0f, 1.0f};
  InjectDequantizeTask task;
  task.inject.clean = clean.data();
  task.inject.out = out.data();
  task.inject.numel = 1000;
  task.inject.elem_bytes = 1;
  task.inject.params = symmetric(8, 0.0005);  // sparse: about 4 of the 1000 elements listed
  task.weights = weights.data();
  task.ranges = &range;
  const kernels::DequantizeTask clean_weights{clean.data(), 1000, 1, &range, task.format, weights.data()};
  kernels::dequantize_many_cpu(&clean_weights, 1);
  IncrementalInjectState state;
  EXPECT_GT(inject_dequantize_incremental_cpu(&task, 1, 1, state), 0);
  EXPECT_FALSE(state.dense);
  InjectDequantizeTask shorter = task;
  shorter.inject.numel = 999;  // the state's lists belong to 1000 elements
  EXPECT_THROW(inject_dequantize_incremental_cpu(&shorter, 1, 2, state), std::invalid_argument);
  // A refused call changes nothing: the next one still undoes the first pattern from its list.
  task.inject.params = symmetric(8, 0.0001);
  const int64_t changed = inject_dequantize_incremental_cpu(&task, 1, 3, state);
  std::vector<uint8_t> expected;
  EXPECT_EQ(changed, inject(clean, expected, task.inject.params, 3));
  EXPECT_TRUE(out == expected);
  std::vector<float> expected_weights(1000);
  const kernels::DequantizeTask dense{expected.data(), 1000, 1, &range, task.format, expected_weights.data()};
  kernels::dequantize_many_cpu(&dense, 1);
  EXPECT_EQ(std::memcmp(weights.data(), expected_weights.data(), sizeof(float) * 1000), 0);
  IncrementalInjectState fresh;
  InjectDequantizeTask in_place = task;
  in_place.inject.out = clean.data();
  EXPECT_THROW(inject_dequantize_incremental_cpu(&in_place, 1, 2, fresh), std::invalid_argument);
  InjectDequantizeTask wide = task;
  wide.format.bits = 12;  // 12-bit codes live in 2 bytes
  wide.inject.params = symmetric(8, 0.01);
  EXPECT_THROW(inject_dequantize_incremental_cpu(&wide, 1, 2, fresh), std::invalid_argument);
  InjectDequantizeTask uneven = task;
  uneven.channels = 3;  // 1000 elements do not split into 3 channels
  EXPECT_THROW(inject_dequantize_incremental_cpu(&uneven, 1, 2, fresh), Error);
}

// ---------------------------------------------------------------------------------------------
// Explicit patterns

TEST(BitErrorKernel, DrawnPatternAppliedEqualsInjection) {
  const auto clean = random_codes<uint16_t>(33333, 9, 5);
  const std::vector<BitErrorParams> models = {
      symmetric(9, 0.03), make_bit_error_params(8, 1, 0.2, 0.2), make_bit_error_params(0, 2, 0.1, 0.1),
      make_bit_error_params(0, 9, 0.02, 0.08), make_bit_error_params(0, 9, 0.0, 0.05),
      make_bit_error_params(0, 9, 0.05, 0.0)};
  for (size_t k = 0; k < models.size(); ++k) {
    std::vector<uint16_t> injected;
    const int64_t changed = inject(clean, injected, models[k], 31, 6);
    const auto selected = draw_selected_bits(clean.size(), models[k], 31, 6);
    std::vector<uint16_t> applied = clean;
    EXPECT_EQ(apply_selected_bits_cpu(applied.data(), 2, selected.data(), selected.size()), changed) << k;
    EXPECT_TRUE(applied == injected) << "model " << k;
    for (const auto& s : selected) {
      ASSERT_LT(s.element, static_cast<int64_t>(clean.size()));
      ASSERT_GE(s.bit, models[k].bit_lo);
      ASSERT_LT(s.bit, models[k].bit_lo + models[k].bit_count);
    }
  }
  // Kinds: symmetric -> only flips; stuck-at-0 -> only Set0; 0->1 > 1->0 -> flips and Set1.
  for (const auto& s : draw_selected_bits(5000, symmetric(8, 0.1), 1, 0)) ASSERT_EQ(s.kind, FlipKind::Flip);
  for (const auto& s : draw_selected_bits(5000, make_bit_error_params(0, 8, 0, 0.1), 1, 0)) {
    ASSERT_EQ(s.kind, FlipKind::Set0);
  }
  int flips = 0, set1 = 0;
  for (const auto& s : draw_selected_bits(5000, make_bit_error_params(0, 8, 0.2, 0.05), 1, 0)) {
    ASSERT_NE(s.kind, FlipKind::Set0);
    (s.kind == FlipKind::Flip ? flips : set1)++;
  }
  EXPECT_NEAR(flips, 40000 * 0.05, 5 * std::sqrt(40000 * 0.05));
  EXPECT_NEAR(set1, 40000 * 0.15, 5 * std::sqrt(40000 * 0.15));
}

// ---------------------------------------------------------------------------------------------
// Exact statistics: flip counts ~ Binomial(bits, p), uniform over elements, positions in the chunk
// and bit positions. Codes are zeros, so set bits of the output are exactly the flips.

struct StatsCase {
  double p;
  int64_t numel;
  int bits;
  int seeds;
};

template <typename T>
void check_statistics(const StatsCase& sc) {
  const std::vector<T> zeros(sc.numel, 0);
  constexpr int kGroups = 64;  // contiguous element groups, per seed
  // Bins of positions within a chunk: a power of two dividing 256, about 40 expected flips each.
  int chunk_bins = 256;
  while (chunk_bins > 2 && sc.p * sc.numel * sc.bits * sc.seeds / chunk_bins < 40.0) chunk_bins /= 2;
  std::vector<int64_t> per_bit(sc.bits, 0), per_chunk_position(chunk_bins, 0), per_group(kGroups * sc.seeds, 0);
  std::vector<double> bit_trials(sc.bits, static_cast<double>(sc.numel) * sc.seeds);
  std::vector<double> chunk_trials(chunk_bins, 0.0), group_trials(kGroups * sc.seeds, 0.0);
  for (int64_t i = 0; i < sc.numel; ++i) {
    chunk_trials[(i % kChunkElements) * chunk_bins / kChunkElements] += sc.bits * sc.seeds;
    for (int s = 0; s < sc.seeds; ++s) group_trials[s * kGroups + i * kGroups / sc.numel] += sc.bits;
  }
  int64_t total = 0;
  std::vector<T> out;
  for (int s = 0; s < sc.seeds; ++s) {
    const int64_t changed = inject(zeros, out, symmetric(sc.bits, sc.p), 1000 + s, 0);
    int64_t seen = 0;
    for (int64_t i = 0; i < sc.numel; ++i) {
      if (out[i] == 0) continue;
      ASSERT_EQ(out[i] >> sc.bits, 0);
      const int c = popcount64(out[i]);
      seen += c;
      per_group[s * kGroups + i * kGroups / sc.numel] += c;
      per_chunk_position[(i % kChunkElements) * chunk_bins / kChunkElements] += c;
      for (int b = 0; b < sc.bits; ++b) per_bit[b] += (out[i] >> b) & 1;
    }
    ASSERT_EQ(seen, changed);
    total += changed;
  }
  // Total over seeds ~ Binomial(seeds * numel * bits, p).
  const double trials = static_cast<double>(sc.numel) * sc.bits * sc.seeds;
  EXPECT_NEAR(static_cast<double>(total), trials * sc.p, 4.5 * std::sqrt(trials * sc.p * (1 - sc.p))) << "p=" << sc.p;
  // Per-bin counts ~ independent Binomial(bits in bin, p): mean and variance both checked.
  expect_binomial_bins("element groups", per_group, group_trials, sc.p);
  expect_binomial_bins("bit positions", per_bit, bit_trials, sc.p);
  expect_binomial_bins("positions in the chunk", per_chunk_position, chunk_trials, sc.p);
}

TEST(BitErrorKernelStatistics, Rate1e6OnManyBits) { check_statistics<uint8_t>({1e-6, int64_t{1} << 24, 8, 6}); }
TEST(BitErrorKernelStatistics, Rate1e4) { check_statistics<uint8_t>({1e-4, int64_t{1} << 20, 8, 8}); }
TEST(BitErrorKernelStatistics, Rate1e2) { check_statistics<uint8_t>({1e-2, int64_t{1} << 18, 8, 8}); }
TEST(BitErrorKernelStatistics, Rate1e1) { check_statistics<uint8_t>({0.1, int64_t{1} << 16, 8, 8}); }
TEST(BitErrorKernelStatistics, RateHalf) { check_statistics<uint8_t>({0.5, int64_t{1} << 14, 8, 8}); }
TEST(BitErrorKernelStatistics, Rate1e2FourBits) { check_statistics<uint8_t>({1e-2, 100003, 4, 8}); }
TEST(BitErrorKernelStatistics, Rate1e2TwelveBits) { check_statistics<uint16_t>({1e-2, 50021, 12, 8}); }

TEST(BitErrorKernelStatistics, PerChunkCountsAreBinomial) {
  // Chi-square of per-chunk flip counts against the Binomial(256 * 8, p) distribution, binned.
  const double p = 0.01;
  const int n = 2048;
  const std::vector<uint8_t> zeros(int64_t{1} << 20, 0);
  std::vector<uint8_t> out;
  inject(zeros, out, symmetric(8, p), 4242, 3);
  std::vector<int64_t> histogram(64, 0);
  const int64_t chunks = static_cast<int64_t>(zeros.size()) / kChunkElements;
  for (int64_t c = 0; c < chunks; ++c) {
    int count = 0;
    for (int64_t i = 0; i < kChunkElements; ++i) count += popcount64(out[c * kChunkElements + i]);
    histogram[std::min(count, 63)]++;
  }
  // Expected counts; bins below 5 expected are merged into their neighbours at both tails.
  std::vector<double> pmf(64, 0.0);
  for (int k = 0; k < 64; ++k) {
    const double log_pmf = std::lgamma(n + 1.0) - std::lgamma(k + 1.0) - std::lgamma(n - k + 1.0) +
                           k * std::log(p) + (n - k) * std::log1p(-p);
    pmf[k] = std::exp(log_pmf);
  }
  double tail = 1.0;
  for (int k = 0; k < 63; ++k) tail -= pmf[k];
  pmf[63] = tail;
  std::vector<double> bin_expected, bin_observed;
  double expected_acc = 0.0, observed_acc = 0.0;
  for (int k = 0; k < 64; ++k) {
    expected_acc += pmf[k] * chunks;
    observed_acc += histogram[k];
    if (expected_acc >= 5.0) {
      bin_expected.push_back(expected_acc);
      bin_observed.push_back(observed_acc);
      expected_acc = observed_acc = 0.0;
    }
  }
  bin_expected.back() += expected_acc;  // fold the small upper tail into the last bin
  bin_observed.back() += observed_acc;
  double stat = 0.0;
  for (size_t b = 0; b < bin_expected.size(); ++b) {
    stat += (bin_observed[b] - bin_expected[b]) * (bin_observed[b] - bin_expected[b]) / bin_expected[b];
  }
  const int df = static_cast<int>(bin_expected.size()) - 1;
  ASSERT_GT(df, 10);
  EXPECT_LT(stat, chi2_upper(df));
  EXPECT_GT(stat, chi2_lower(df));
}

}  // namespace
}  // namespace bitrobust::bits
