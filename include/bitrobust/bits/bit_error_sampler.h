#pragma once
// Torch-free, host and device: which bits of one chunk of codes a random bit error pattern selects.
//
// NOTE [Bit error sampling]
// Model: every bit b that errors may hit has its own uniform u_b; the bit is selected at rate p when
// u_b < p. One seed is "a chip": the same u_b at every rate, so the selection at a lower rate is a
// subset of the selection at a higher one (nesting).
//
// Drawing one uniform per bit would cost a random number per bit. Instead each tensor is split into
// chunks of kChunkElements elements (the last one conceptually padded to full size; bits of padding
// elements are drawn but never applied, so an element's pattern does not depend on the tensor's
// length). A chunk has n = kChunkElements * bit_count bits, and we draw its n uniforms in increasing
// order (their order statistics U_(1) < ... < U_(n)) and stop at the first one >= p:
//   * Renyi's representation: with E_i iid Exp(1), -log(1 - U_(j)) = S_j = sum_{i<=j} E_i/(n-i+1).
//     So U_(j) < p  <=>  S_j < T(p) = -log1p(-p); T is computed once on the host (double) and
//     passed to the kernels. E_i = -det_log(V_i) with V_i uniform in (0, 1); det_log is
//     bit-identical on CPU and CUDA (NOTE [Deterministic math]), so S_j and every comparison are too.
//   * The j-th order statistic belongs to the j-th bit of a uniformly random permutation of the
//     chunk's bits (ranks of iid uniforms are a uniform permutation, independent of the values): we
//     draw uniformly among the not-yet-chosen bits by rejection, remembering chosen bits in a small
//     list that turns into a bitmap when it fills up.
// Cost: one Philox block and one det_log per selected bit, plus one Philox block per chunk (NOTE
// [Empty chunk shortcut]): O(p * bits) + O(chunks).
//
// NOTE [Empty chunk shortcut]: at low rates most chunks select nothing: S_1 = -log(V_0)/n >= T.
// The host computes v_max = exp(-(n T (1 + 1e-9) + 1e-12)) (make_bit_error_params); V_0 <= v_max
// implies -det_log(V_0)/n >= T whatever the last-bit rounding of det_log, the division and exp, so
// such a chunk is skipped without the logarithm, with the same result as the full computation. The
// cut is a host-computed double passed to both devices, and only ever skips provably empty chunks.
//
// Random numbers: Philox key = make_key(seed, param_index, chunk_index). Order statistic j (0-based)
// uses counter (lo = j, hi = 0): words 0,1 give V_j, words 2,3 the first two position attempts;
// further attempts for the same j use counters (lo = j, hi = r) for r = 1, 2, ..., four per block.
// Nothing depends on thread count, device or call order.
//
// Bit numbering within a chunk: bit b in [0, n) is element (b mod kChunkElements) of the chunk, bit
// position bit_lo + (b div kChunkElements) of that element.
//
// Actions: a selected bit with value S_j and current (clean) value v becomes 1 - v when
// v == 0 and S_j < threshold_0to1, or v == 1 and S_j < threshold_1to0; otherwise it is left alone.
// So symmetric random errors use both thresholds = T(p); 0->1 / 1->0 rates use T(p01) and T(p10)
// (the sequence runs up to the larger one); stuck-at-0 uses (0, T(p)) and stuck-at-1 uses (T(p), 0).
// Seen from the bit rather than its value, a selected bit is a flip (S_j below both thresholds),
// a set-to-1 (only below threshold_0to1) or a set-to-0 (only below threshold_1to0): that is the
// value-independent form in which patterns are listed and saved (FlipKind).
#include <cstdint>

#include "bitrobust/common/detmath.h"
#include "bitrobust/common/philox.h"

namespace bitrobust::bits {

/// Elements per chunk; see NOTE [Bit error sampling]. Changing it changes every pattern.
constexpr int64_t kChunkElements = 256;
constexpr int kChunkShift = 8;
static_assert((int64_t{1} << kChunkShift) == kChunkElements, "kChunkShift must match");

/// What a selected bit does, independent of its value; see NOTE [Bit error sampling].
enum class FlipKind : uint8_t { Flip = 0, Set0 = 1, Set1 = 2 };

/// Where errors may hit in each element of one tensor, and the rate thresholds T = -log1p(-rate).
struct BitErrorParams {
  int32_t bit_lo = 0;          ///< lowest bit position errors may hit
  int32_t bit_count = 0;       ///< positions bit_lo .. bit_lo + bit_count - 1; 0: no errors
  double threshold_0to1 = 0;   ///< a selected bit holding 0 becomes 1 when S < threshold_0to1
  double threshold_1to0 = 0;   ///< a selected bit holding 1 becomes 0 when S < threshold_1to0
  /// A chunk whose first uniform V_0 is <= this selects no bit (0: always run the sampler). A pure
  /// shortcut that never changes the result; see NOTE [Empty chunk shortcut].
  double empty_chunk_v_max = 0;

  BR_HOST_DEVICE double threshold_max() const {
    return threshold_0to1 > threshold_1to0 ? threshold_0to1 : threshold_1to0;
  }
  BR_HOST_DEVICE bool active() const { return bit_count > 0 && threshold_max() > 0.0; }
  /// The value-independent action of a bit selected with sum s (s < threshold_max()).
  BR_HOST_DEVICE FlipKind kind_of(double s) const {
    const bool to1 = s < threshold_0to1, to0 = s < threshold_1to0;
    return to1 && to0 ? FlipKind::Flip : (to1 ? FlipKind::Set1 : FlipKind::Set0);
  }
};

/// A chunk's chosen bits as a bitmap over caller-owned words (ChosenBits' own,
/// or CUDA shared memory), cleared by the caller.
struct BitmapView {
  uint64_t* words;
  BR_HOST_DEVICE bool insert(uint32_t b) {
    const uint64_t mask = uint64_t{1} << (b & 63);
    uint64_t& word = words[b >> 6];
    if (word & mask) return false;
    word |= mask;
    return true;
  }
};

/// Chosen bits of one chunk: a list of up to kListSize bits (no clearing cost when few bits are
/// selected: for one GPU thread drawing a chunk alone, whose bitmap would live in local memory; the
/// CUDA kernel did so until NOTE [Group sampler]), then a bitmap of kMaxWords
/// 64-bit words. kListSize = 0: bitmap from the start (used on the CPU, where clearing it is cheap).
template <int kMaxWords, int kListSize>
struct ChosenBits {
  int count = 0;
  int num_words;
  bool use_bitmap;
  uint16_t list[kListSize > 0 ? kListSize : 1];
  uint64_t words[kMaxWords];

  BR_HOST_DEVICE explicit ChosenBits(int n_words) : num_words(n_words), use_bitmap(kListSize == 0) {
    if (kListSize == 0) {
      for (int w = 0; w < num_words; ++w) words[w] = 0;
    }
  }

  /// Returns false if b was already chosen.
  BR_HOST_DEVICE bool insert(uint32_t b) {
    if (kListSize > 0 && !use_bitmap) {
      for (int i = 0; i < count; ++i) {
        if (list[i] == b) return false;
      }
      if (count < kListSize) {
        list[count++] = static_cast<uint16_t>(b);
        return true;
      }
      for (int w = 0; w < num_words; ++w) words[w] = 0;
      for (int i = 0; i < count; ++i) words[list[i] >> 6] |= uint64_t{1} << (list[i] & 63);
      use_bitmap = true;
    }
    return BitmapView{words}.insert(b);
  }
};

/// Bitmap words needed for a chunk of elements with `container_bits` bits each.
BR_HOST_DEVICE constexpr int chunk_bitmap_words(int container_bits) {
  return static_cast<int>(kChunkElements) * container_bits / 64;
}

/// make_key(seed, param_index, chunk) == chunk_key(param_key_prefix(seed, param_index), chunk): the
/// prefix is computed once per tensor.
BR_HOST_DEVICE uint64_t param_key_prefix(uint64_t seed, int64_t param_index) {
  return mix64(mix64(seed) ^ static_cast<uint64_t>(param_index));
}
BR_HOST_DEVICE uint64_t chunk_key(uint64_t prefix, int64_t chunk_index) {
  return mix64(prefix ^ static_cast<uint64_t>(chunk_index));
}

/// V_0, the first uniform of a chunk; V_0 <= params.empty_chunk_v_max means the chunk is empty.
BR_HOST_DEVICE double first_chunk_uniform(uint64_t key) {
  const Philox4x32 r = philox4x32(0, 0, key);
  return uniform_open01(r.v[0], r.v[1]);
}

/// The bit of order statistic j (0-based) among the chunk's n bits: the first of its position
/// attempts that `chosen` does not hold yet (words 2 and 3 of Philox counter (j, 0), then the four
/// words of (j, r) for r = 1, 2, ...), inserted into `chosen`. Chosen: anything with
/// `bool insert(uint32_t)` that returns false for a bit it holds already.
// (Rare, after a collision: kept out of the sampler's inner loop, where inlining it made the CPU
// sampler 13-17% slower at p = 1% in bench_bits.)
#if defined(__CUDACC__)
#define BR_SAMPLER_COLD BR_HOST_DEVICE  // (a call there cost the CUDA kernel 18 registers)
#else
#define BR_SAMPLER_COLD __attribute__((noinline))
#endif
template <typename Chosen>
BR_SAMPLER_COLD uint32_t choose_position_after_collisions(uint32_t j, uint32_t n, uint64_t key, Chosen& chosen) {
  for (uint64_t round = 1;; ++round) {
    const Philox4x32 r = philox4x32(j, round, key);
    for (int w = 0; w < 4; ++w) {
      const uint32_t b = uniform_below(r.v[w], n);
      if (chosen.insert(b)) return b;
    }
  }
}

template <typename Chosen>
BR_HOST_DEVICE uint32_t choose_position(uint32_t attempt2, uint32_t attempt3, uint32_t j, uint32_t n, uint64_t key,
                                        Chosen& chosen) {
  uint32_t b = uniform_below(attempt2, n);
  if (chosen.insert(b)) return b;
  b = uniform_below(attempt3, n);
  if (chosen.insert(b)) return b;
  return choose_position_after_collisions(j, n, key, chosen);
}

/// Order statistics j0 .. j0 + lanes - 1 of one chunk, computed ahead of their use: the Philox
/// words of counter (j, 0) (words 0 and 1 give V_j, words 2 and 3 the first position attempts),
/// V_j, and log(V_j) / (n - j), the negated exponential spacing.
template <int kLanes>
struct SpacingLanes {
  uint32_t words[4][kLanes];
  double v[kLanes];
  double spacing[kLanes];

  /// Lanes with j >= n are computed too (their values are never used), so that with
  /// lanes == kLanes every loop has a constant trip count and runs in SIMD registers.
  BR_HOST_DEVICE void compute(int lanes, uint64_t key, uint32_t j0, uint32_t n) {
    uint32_t counter[kLanes], key_lo[kLanes], key_hi[kLanes];
    for (int i = 0; i < lanes; ++i) {
      counter[i] = j0 + static_cast<uint32_t>(i);
      key_lo[i] = static_cast<uint32_t>(key);
      key_hi[i] = static_cast<uint32_t>(key >> 32);
    }
    philox4x32_lanes<kLanes>(lanes, counter, key_lo, key_hi, words);
    for (int i = 0; i < lanes; ++i) {
      v[i] = uniform_open01(words[0][i], words[1][i]);  // in [2^-54, 1): normal, det_log_normal applies
      // 0 or wrapped only for unused lanes (j >= n); `| (r == 0)` avoids 0/0 there without a branch.
      const uint32_t remaining = n - j0 - static_cast<uint32_t>(i);
      spacing[i] = det_log_normal(v[i]) / static_cast<double>(remaining | static_cast<uint32_t>(remaining == 0));
    }
  }
};

/// Calls visit(element_in_chunk, bit_position, s) for each selected bit of the chunk with Philox key
/// `key` (chunk_key(...)), in increasing order of s, for all s < params.threshold_max().
/// kMaxWords must be >= chunk_bitmap_words(bit_count); kListSize: see ChosenBits (no effect on
/// the result).
///
/// The exponential spacings are computed kLanes at a time ahead of their use (independent work:
/// SIMD lanes on the CPU, instruction-level parallelism in one GPU thread), then consumed in order; how many
/// are computed ahead never changes the result, since each spacing depends only on (key, j) and the
/// sum is accumulated in the same order. kAllLanes: always compute all kLanes (constant trip counts
/// for the CPU's vector units); otherwise compute no further ahead than about the expected number
/// of selected bits (a GPU thread pays for every spacing it computes; the CUDA kernel now draws
/// spacings a warp at a time instead, NOTE [Group sampler]).
template <int kMaxWords, int kListSize = 16, int kLanes = 4, bool kAllLanes = false, typename Visit>
BR_HOST_DEVICE void for_each_selected_bit(const BitErrorParams& params, uint64_t key, Visit&& visit) {
  static_assert(kAllLanes || kLanes >= 2, "shrinking batches compute up to 2 lanes");
  const double t_max = params.threshold_max();
  if (!(params.bit_count > 0 && t_max > 0.0)) return;
  const uint32_t n = static_cast<uint32_t>(kChunkElements) * static_cast<uint32_t>(params.bit_count);
  // About n * t_max bits are selected (fewer at high rates).
  const double expected = static_cast<double>(n) * t_max;
  // NOTE [Empty chunk shortcut], before any spacing is computed: most chunks at low rates end here.
  // (Callers computing all lanes check V_0 themselves for many chunks at once, or below.)
  if (!kAllLanes && first_chunk_uniform(key) <= params.empty_chunk_v_max) return;
  ChosenBits<kMaxWords, kListSize> chosen(static_cast<int>(n >> 6));
  SpacingLanes<kLanes> ahead;
  double s = 0.0;
  for (uint32_t j = 0; j < n;) {
    uint32_t batch = kLanes;
    if (!kAllLanes && expected < static_cast<double>(j + kLanes)) batch = expected > static_cast<double>(j) ? 2 : 1;
    if (batch > n - j) batch = n - j;
    ahead.compute(kAllLanes ? kLanes : static_cast<int>(batch), key, j, n);
    if (j == 0 && ahead.v[0] <= params.empty_chunk_v_max) return;  // NOTE [Empty chunk shortcut]
    for (uint32_t i = 0; i < batch; ++i, ++j) {
      s -= ahead.spacing[i];
      if (!(s < t_max)) return;
      const uint32_t b = choose_position(ahead.words[2][i], ahead.words[3][i], j, n, key, chosen);
      visit(static_cast<int32_t>(b & (kChunkElements - 1)),
            params.bit_lo + static_cast<int32_t>(b >> kChunkShift), s);
    }
  }
}

// NOTE [Chunks side by side]
// for_each_selected_bit over several chunks at once (the CPU's work item), in rounds over the order
// statistic j: round j computes spacing j of every chunk still running, kLanes chunks to a vector,
// then continues each chunk's sum and chooses its position. One chunk at a time, the vector lanes
// hold order statistics j .. j + kLanes - 1 of one chunk, and at low rates most of them are wasted:
// at p = 0.1% an 8-bit chunk selects about 2 bits, yet a vector of 8 spacings is computed for it.
// Side by side a chunk costs about as many spacings as it selects bits, plus one. Each chunk's
// spacings, attempts and sum are those of for_each_selected_bit, in the same order, so each chunk
// selects the same bits with the same sums (test BitErrorKernel.ChunksSideBySideSelectTheSameBits);
// only the order of the visits across chunks differs, which never matters to an injection, since
// the selected bits are distinct.

/// Calls visit(k, element_in_chunk, bit_position, s) for each selected bit of chunks k < num_chunks
/// (Philox keys keys[k]), each chunk's bits in increasing order of s. first_words[w][k]: word w of
/// the Philox block (counter 0, key keys[k]), which callers have computed for NOTE [Empty chunk
/// shortcut], for k below num_chunks rounded up to a multiple of kLanes (the values past
/// num_chunks are never used). Host only: its stack holds kChunks bitmaps, 128 KiB for the CPU's
/// 128 chunks of 32-bit codes (its caller's frame is about 140 KiB then; OpenMP's threads get the
/// process's default thread stack, megabytes under glibc, unless OMP_STACKSIZE sets less).
template <int kMaxWords, int kChunks, int kLanes, typename Visit>
void for_each_selected_bit_side_by_side(const BitErrorParams& params, int num_chunks, const uint64_t* keys,
                                        const uint32_t (*first_words)[kChunks], Visit&& visit) {
  static_assert(kChunks % kLanes == 0, "rounds compute whole vectors of kLanes chunks");
  static_assert(sizeof(uint64_t) * kChunks * kMaxWords <= (128 << 10), "bitmaps beyond 128 KiB of stack");
  const double t_max = params.threshold_max();
  if (!(params.bit_count > 0 && t_max > 0.0)) return;
  const uint32_t n = static_cast<uint32_t>(kChunkElements) * static_cast<uint32_t>(params.bit_count);
  // Which chunks select anything (NOTE [Empty chunk shortcut]), whole vectors of kLanes at once,
  // then listed.
  bool selecting[kChunks];
  for (int k = 0; k < (num_chunks + kLanes - 1) / kLanes * kLanes; ++k) {
    selecting[k] = uniform_open01(first_words[0][k], first_words[1][k]) > params.empty_chunk_v_max;
  }
  int running[kChunks];  // chunks still selecting, in increasing k
  int num_running = 0;
  for (int k = 0; k < num_chunks; ++k) {
    running[num_running] = k;
    num_running += selecting[k];
  }
  if (num_running == 0) return;
  double s[kChunks];
  uint64_t bitmaps[kChunks][kMaxWords];
  const int num_words = static_cast<int>(n >> 6);
  for (int i = 0; i < num_running; ++i) {
    s[running[i]] = 0.0;
    for (int w = 0; w < num_words; ++w) bitmaps[running[i]][w] = 0;
  }
  // Per running slot i (not per chunk): spacing j and the first two position attempts.
  double spacing[kChunks];
  uint32_t attempt2[kChunks], attempt3[kChunks];
  for (uint32_t j = 0; j < n && num_running > 0; ++j) {
    const double remaining = static_cast<double>(n - j);
    for (int g = 0; g < num_running; g += kLanes) {
      // Lanes past the running chunks repeat the last one; their values are never read.
      uint32_t counter[kLanes], key_lo[kLanes], key_hi[kLanes], words[4][kLanes];
      int chunk[kLanes];
      for (int i = 0; i < kLanes; ++i) {
        chunk[i] = running[g + i < num_running ? g + i : num_running - 1];
        counter[i] = j;
        key_lo[i] = static_cast<uint32_t>(keys[chunk[i]]);
        key_hi[i] = static_cast<uint32_t>(keys[chunk[i]] >> 32);
      }
      if (j == 0) {
        for (int w = 0; w < 4; ++w) {
          for (int i = 0; i < kLanes; ++i) words[w][i] = first_words[w][chunk[i]];
        }
      } else {
        philox4x32_lanes<kLanes>(kLanes, counter, key_lo, key_hi, words);
      }
      for (int i = 0; i < kLanes; ++i) {
        spacing[g + i] = det_log_normal(uniform_open01(words[0][i], words[1][i])) / remaining;
        attempt2[g + i] = words[2][i];
        attempt3[g + i] = words[3][i];
      }
    }
    int kept = 0;
    for (int i = 0; i < num_running; ++i) {
      const int k = running[i];
      s[k] -= spacing[i];
      if (!(s[k] < t_max)) continue;
      BitmapView chosen{bitmaps[k]};
      const uint32_t b = choose_position(attempt2[i], attempt3[i], j, n, keys[k], chosen);
      visit(k, static_cast<int32_t>(b & (kChunkElements - 1)), params.bit_lo + static_cast<int32_t>(b >> kChunkShift),
            s[k]);
      running[kept++] = k;
    }
    num_running = kept;
  }
}

// NOTE [Group sampler]
// for_each_selected_bit in rounds of kGroup order statistics for a group of threads (a CUDA warp):
// each lane computes one spacing and its first two position attempts (group_draw, the costly part:
// a Philox block, a logarithm and a division), then one lane adds the spacings up in order and
// chooses the positions (group_select: a subtraction, a compare and usually one bitmap probe per
// bit), and the lanes apply the selected bits in parallel. The sum is accumulated in the same order
// and every spacing and attempt depends only on (key, j), so the selection is
// for_each_selected_bit's, bit for bit (test BitErrorKernel.GroupRoundsSelectTheSameBits). One
// thread per chunk, drawing ~20 bits one after the other at p = 1%, left an H200 mostly idle
// (docs/bit_errors.md).

/// One round's exchange between the lanes of a group.
template <int kGroup>
struct GroupRound {
  double spacing[kGroup];
  uint32_t attempt2[kGroup], attempt3[kGroup];
  uint32_t position[kGroup];  ///< chosen bits of this round, [0, count)
  double s[kGroup];           ///< their sums, for FlipKind
  int count;
  bool done;                  ///< no round after this one
};

/// Lane `lane`'s share of a round starting at order statistic j0: spacing and first attempts of
/// j = j0 + lane (nothing for j >= n).
template <int kGroup>
BR_HOST_DEVICE void group_draw(GroupRound<kGroup>& round, int lane, uint64_t key, uint32_t j0, uint32_t n) {
  const uint32_t j = j0 + static_cast<uint32_t>(lane);
  if (j >= n) return;
  SpacingLanes<1> one;
  one.compute(1, key, j, n);
  round.spacing[lane] = one.spacing[0];
  round.attempt2[lane] = one.words[2][0];
  round.attempt3[lane] = one.words[3][0];
}

/// One lane's share after group_draw: continues the running sum `s` (0 before the first round)
/// through the round's spacings, chooses the positions of those below t_max, and says whether
/// another round follows. The caller has checked the chunk is not empty (NOTE [Empty chunk
/// shortcut]) and cleared `chosen`.
template <int kGroup, typename Chosen>
BR_HOST_DEVICE void group_select(GroupRound<kGroup>& round, uint64_t key, uint32_t j0, uint32_t n, double t_max,
                                 double& s, Chosen& chosen) {
  const uint32_t batch = n - j0 < static_cast<uint32_t>(kGroup) ? n - j0 : static_cast<uint32_t>(kGroup);
  int count = 0;
  bool stop = false;
  for (uint32_t i = 0; i < batch; ++i) {
    s -= round.spacing[i];
    if (!(s < t_max)) {
      stop = true;
      break;
    }
    round.position[count] = choose_position(round.attempt2[i], round.attempt3[i], j0 + i, n, key, chosen);
    round.s[count] = s;
    ++count;
  }
  round.count = count;
  round.done = stop || j0 + batch >= n;
}

/// The same for chunk `chunk_index` of parameter `param_index` under `seed`.
template <int kMaxWords, int kListSize = 16, int kLanes = 4, bool kAllLanes = false, typename Visit>
BR_HOST_DEVICE void for_each_selected_bit(const BitErrorParams& params, uint64_t seed, int64_t param_index,
                                          int64_t chunk_index, Visit&& visit) {
  for_each_selected_bit<kMaxWords, kListSize, kLanes, kAllLanes>(
      params, chunk_key(param_key_prefix(seed, param_index), chunk_index), visit);
}

}  // namespace bitrobust::bits
