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
// Cost: one Philox block and one det_log per selected bit, plus one per chunk: O(p * bits) + O(chunks).
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

/// Chosen bits of one chunk: a short list (no clearing cost when few bits are selected), then a
/// bitmap of kMaxWords 64-bit words once the list is full.
template <int kMaxWords>
struct ChosenBits {
  static constexpr int kListSize = 16;
  int count = 0;
  int num_words;
  bool use_bitmap = false;
  uint16_t list[kListSize];
  uint64_t words[kMaxWords];

  BR_HOST_DEVICE explicit ChosenBits(int n_words) : num_words(n_words) {}

  /// Returns false if b was already chosen.
  BR_HOST_DEVICE bool insert(uint32_t b) {
    if (!use_bitmap) {
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
    const uint64_t mask = uint64_t{1} << (b & 63);
    uint64_t& word = words[b >> 6];
    if (word & mask) return false;
    word |= mask;
    return true;
  }
};

/// Bitmap words needed for a chunk of elements with `container_bits` bits each.
BR_HOST_DEVICE constexpr int chunk_bitmap_words(int container_bits) {
  return static_cast<int>(kChunkElements) * container_bits / 64;
}

/// Calls visit(element_in_chunk, bit_position, s) for each selected bit of one chunk, in increasing
/// order of s, for all s < params.threshold_max(). kMaxWords must be >= chunk_bitmap_words(bit_count).
/// See NOTE [Bit error sampling].
template <int kMaxWords, typename Visit>
BR_HOST_DEVICE void for_each_selected_bit(const BitErrorParams& params, uint64_t seed,
                                          int64_t param_index, int64_t chunk_index, Visit&& visit) {
  const double t_max = params.threshold_max();
  if (!(params.bit_count > 0 && t_max > 0.0)) return;
  const uint64_t key = make_key(seed, static_cast<uint64_t>(param_index),
                                static_cast<uint64_t>(chunk_index));
  const uint32_t n = static_cast<uint32_t>(kChunkElements) * static_cast<uint32_t>(params.bit_count);
  ChosenBits<kMaxWords> chosen(static_cast<int>(n >> 6));
  double s = 0.0;
  for (uint32_t j = 0; j < n; ++j) {
    Philox4x32 r = philox4x32(j, 0, key);
    const double v = uniform_open01(r.v[0], r.v[1]);
    s -= det_log(v) / static_cast<double>(n - j);
    if (!(s < t_max)) break;
    uint32_t b;
    uint64_t round = 0;
    int word = 2;
    for (;;) {
      b = uniform_below(r.v[word], n);
      if (chosen.insert(b)) break;
      if (++word == 4) {
        r = philox4x32(j, ++round, key);
        word = 0;
      }
    }
    visit(static_cast<int32_t>(b & (kChunkElements - 1)),
          params.bit_lo + static_cast<int32_t>(b >> kChunkShift), s);
  }
}

}  // namespace bitrobust::bits
