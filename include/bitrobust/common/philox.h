#pragma once
// NOTE [Random streams]: every random choice in bitrobust comes from Philox4x32-10, a counter-based
// generator: the output is a pure function of (key, counter). Keys are built from the user's seed
// and what is being drawn (a parameter index, a chunk, an epoch), counters from the draw's index.
// So results do not depend on thread count, device, batch size or call order, and the same code
// compiles for the host and for CUDA with identical results.
#include <cstdint>

#if defined(__CUDACC__)
#define BR_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define BR_HOST_DEVICE inline
#endif

namespace bitrobust {

struct Philox4x32 {
  uint32_t v[4];
};

BR_HOST_DEVICE void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

/// Philox4x32-10 (Salmon et al., SC'11): 4 x 32 random bits for a 128-bit counter and 64-bit key.
BR_HOST_DEVICE Philox4x32 philox4x32(uint64_t counter_lo, uint64_t counter_hi, uint64_t key) {
  uint32_t c0 = static_cast<uint32_t>(counter_lo), c1 = static_cast<uint32_t>(counter_lo >> 32);
  uint32_t c2 = static_cast<uint32_t>(counter_hi), c3 = static_cast<uint32_t>(counter_hi >> 32);
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(0xD2511F53u, c0, hi0, lo0);
    philox_mulhilo(0xCD9E8D57u, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4x32{{c0, c1, c2, c3}};
}

/// Philox4x32-10 of `lanes` (<= kLanes) blocks at once: out[w][i] is word w of
/// philox4x32(c0[i], 0, key_i) with key_i = k1[i] << 32 | k0[i].
///
/// On the host every 32-bit word is held in a 64-bit integer and the loop over lanes has a
/// straight-line body, so that the compiler runs the lanes in SIMD registers (lanes a multiple of
/// the vector's width leave its remainder loop unused): x86 has a 32 x 32 -> 64-bit vector multiply
/// (low halves of 64-bit lanes) but no vector "high half of a 32-bit product", which is what the
/// 32-bit formulation asks for. A CUDA thread has no SIMD lanes, so
/// there each block is philox4x32 itself. Both give the same words (tests: StreamIsFrozen, and the
/// CPU/CUDA identity check).
template <int kLanes>
BR_HOST_DEVICE void philox4x32_lanes(int lanes, const uint32_t* c0_in, const uint32_t* k0_in,
                                     const uint32_t* k1_in, uint32_t (*out)[kLanes]) {
#if defined(__CUDA_ARCH__)
  for (int i = 0; i < lanes; ++i) {
    const Philox4x32 r = philox4x32(c0_in[i], 0, (static_cast<uint64_t>(k1_in[i]) << 32) | k0_in[i]);
    for (int w = 0; w < 4; ++w) out[w][i] = r.v[w];
  }
#else
  constexpr uint64_t kLow = 0xFFFFFFFFull;
  for (int i = 0; i < lanes; ++i) {
    uint64_t c0 = c0_in[i], c1 = 0, c2 = 0, c3 = 0, k0 = k0_in[i], k1 = k1_in[i];
    for (int round = 0; round < 10; ++round) {  // every value below 2^32 at the top of a round
      const uint64_t p0 = 0xD2511F53ull * c0;
      const uint64_t p1 = 0xCD9E8D57ull * c2;
      c0 = (p1 >> 32) ^ c1 ^ k0;
      c1 = p1 & kLow;
      c2 = (p0 >> 32) ^ c3 ^ k1;
      c3 = p0 & kLow;
      k0 = (k0 + 0x9E3779B9ull) & kLow;
      k1 = (k1 + 0xBB67AE85ull) & kLow;
    }
    out[0][i] = static_cast<uint32_t>(c0);
    out[1][i] = static_cast<uint32_t>(c1);
    out[2][i] = static_cast<uint32_t>(c2);
    out[3][i] = static_cast<uint32_t>(c3);
  }
#endif
}

/// SplitMix64 finaliser: mixes several ids into one Philox key.
BR_HOST_DEVICE uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

BR_HOST_DEVICE uint64_t make_key(uint64_t seed, uint64_t stream, uint64_t sub = 0) {
  return mix64(mix64(mix64(seed) ^ stream) ^ sub);
}

/// Uniform double in the open interval (0, 1) from 53 random bits.
BR_HOST_DEVICE double uniform_open01(uint32_t hi, uint32_t lo) {
  // The 53 bits are hi's 32 and lo's top 21; hi * 2^21 + (lo >> 11) is exact in double, the same
  // number as converting the 53-bit integer at once, but made of 32-bit conversions, which SIMD
  // units before AVX-512 have (they lack 64-bit integer -> double).
  const double bits = static_cast<double>(hi) * 2097152.0 + static_cast<double>(lo >> 11);
  return (bits + 0.5) * (1.0 / 9007199254740992.0);
}

/// Uniform float in [0, 1) from 24 random bits.
BR_HOST_DEVICE float uniform_float01(uint32_t x) {
  return static_cast<float>(x >> 8) * (1.0f / 16777216.0f);
}

/// Uniform integer in [0, n) (Lemire's multiply-shift; bias below 2^-32 * n, irrelevant here).
BR_HOST_DEVICE uint32_t uniform_below(uint32_t x, uint32_t n) {
  return static_cast<uint32_t>((static_cast<uint64_t>(x) * n) >> 32);
}

/// A host-side sequential stream over Philox, for shuffles and augmentation parameters.
class PhiloxStream {
 public:
  PhiloxStream(uint64_t seed, uint64_t stream, uint64_t sub = 0) : key_(make_key(seed, stream, sub)) {}
  uint32_t next_u32() {
    if (index_ == 4) {
      block_ = philox4x32(counter_++, 0, key_);
      index_ = 0;
    }
    return block_.v[index_++];
  }
  uint32_t below(uint32_t n) { return uniform_below(next_u32(), n); }
  float uniform() { return uniform_float01(next_u32()); }

 private:
  uint64_t key_;
  uint64_t counter_ = 0;
  Philox4x32 block_{};
  int index_ = 4;
};

}  // namespace bitrobust
