// CPU element-wise bit operations. Loops are plain and branch-free so the compiler vectorizes them
// (popcount and the highest-bit projection use shift/mask forms rather than builtins for that reason).
#include <stdexcept>
#include <string>

#include "bitrobust/bits/bitops_kernels.h"
#include "kernels/elem_dispatch.h"

namespace bitrobust::bits {
namespace {

// Below this many elements one thread is faster than waking the team (and safer on a busy machine).
constexpr int64_t kParallelThreshold = 1 << 18;

// The loops are built for the baseline ISA and AVX2, chosen at run time (GCC function multiversioning).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define BR_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define BR_VECTOR_CLONES
#endif

// SWAR popcount in T's own width (so 8- and 16-bit lanes vectorize without widening).
template <typename T>
inline T popcount_swar(T x) {
  constexpr T k55 = static_cast<T>(0x55555555u), k33 = static_cast<T>(0x33333333u), k0F = static_cast<T>(0x0F0F0F0Fu);
  T v = static_cast<T>(x - ((x >> 1) & k55));
  v = static_cast<T>((v & k33) + ((v >> 2) & k33));
  v = static_cast<T>((v + (v >> 4)) & k0F);
  if (sizeof(T) == 1) return v;
  v = static_cast<T>(v + (v >> 8));
  if (sizeof(T) == 2) return static_cast<T>(v & 0x1F);
  v = static_cast<T>(v + (v >> 16));
  return static_cast<T>(v & 0x3F);
}

template <typename T>
inline T highest_bit(T x) {
  uint32_t v = x;
  v |= v >> 1;
  v |= v >> 2;
  v |= v >> 4;
  if (sizeof(T) > 1) v |= v >> 8;
  if (sizeof(T) > 2) v |= v >> 16;
  return static_cast<T>(v ^ (v >> 1));
}

template <typename T, typename Op>
BR_VECTOR_CLONES void binary_loop(const T* __restrict a, const T* __restrict b, T* __restrict out, int64_t n, Op op) {
#pragma omp parallel for schedule(static) if (n >= kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) out[i] = op(a[i], b[i]);
}

template <typename T>
void binary_typed(BitBinaryOp op, const T* a, const T* b, T* out, int64_t n) {
  switch (op) {
    case BitBinaryOp::And: binary_loop(a, b, out, n, [](T x, T y) { return static_cast<T>(x & y); }); break;
    case BitBinaryOp::Or: binary_loop(a, b, out, n, [](T x, T y) { return static_cast<T>(x | y); }); break;
    case BitBinaryOp::Xor: binary_loop(a, b, out, n, [](T x, T y) { return static_cast<T>(x ^ y); }); break;
    case BitBinaryOp::AndNot: binary_loop(a, b, out, n, [](T x, T y) { return static_cast<T>(x & ~y); }); break;
    case BitBinaryOp::MsbDiff:
      binary_loop(a, b, out, n, [](T x, T y) { return highest_bit<T>(static_cast<T>(x ^ y)); });
      break;
    default: throw std::invalid_argument("bitops_binary_cpu: unknown operation");
  }
}

template <typename T>
BR_VECTOR_CLONES void not_typed(const T* __restrict a, T* __restrict out, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(~a[i]);
}

template <typename T>
BR_VECTOR_CLONES void popcount_typed(const T* __restrict a, uint8_t* __restrict out, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(popcount_swar<T>(a[i]));
}

template <typename T>
BR_VECTOR_CLONES void hamming_typed(const T* __restrict a, const T* __restrict b, uint8_t* __restrict out, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(popcount_swar<T>(static_cast<T>(a[i] ^ b[i])));
}

template <typename T>
BR_VECTOR_CLONES int64_t hamming_total_typed(const T* __restrict a, const T* __restrict b, int64_t n) {
  int64_t total = 0;
  // Blocks of 4096 elements: per-element counts into a small buffer (vectorizes like popcount),
  // then summed in 32 bits (no overflow: <= 4096 * 32).
  constexpr int64_t kBlock = 4096;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) reduction(+ : total) if (n >= kParallelThreshold)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t begin = blk * kBlock, count = begin + kBlock < n ? kBlock : n - begin;
    uint8_t counts[kBlock];
    for (int64_t i = 0; i < count; ++i) {
      counts[i] = static_cast<uint8_t>(popcount_swar<T>(static_cast<T>(a[begin + i] ^ b[begin + i])));
    }
    uint32_t sum = 0;
    for (int64_t i = 0; i < count; ++i) sum += counts[i];
    total += sum;
  }
  return total;
}

template <typename T>
void extract_typed(const T* __restrict a, uint8_t* __restrict out, int64_t n, int bits) {
#pragma omp parallel for schedule(static) if (n * bits >= kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) {
    for (int k = 0; k < bits; ++k) out[i * bits + k] = static_cast<uint8_t>((a[i] >> k) & 1u);
  }
}

}  // namespace

void bitops_binary_cpu(BitBinaryOp op, const void* a, const void* b, void* out, int64_t n, int elem_bytes) {
  BR_DISPATCH_ELEM("bitops_binary_cpu", elem_bytes,
                   binary_typed<T>(op, static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(out), n));
}

void bitops_not_cpu(const void* a, void* out, int64_t n, int elem_bytes) {
  BR_DISPATCH_ELEM("bitops_not_cpu", elem_bytes, not_typed<T>(static_cast<const T*>(a), static_cast<T*>(out), n));
}

void bitops_popcount_cpu(const void* a, uint8_t* out, int64_t n, int elem_bytes) {
  BR_DISPATCH_ELEM("bitops_popcount_cpu", elem_bytes, popcount_typed<T>(static_cast<const T*>(a), out, n));
}

void bitops_hamming_cpu(const void* a, const void* b, uint8_t* out, int64_t n, int elem_bytes) {
  BR_DISPATCH_ELEM("bitops_hamming_cpu", elem_bytes,
                   hamming_typed<T>(static_cast<const T*>(a), static_cast<const T*>(b), out, n));
}

int64_t bitops_hamming_total_cpu(const void* a, const void* b, int64_t n, int elem_bytes) {
  int64_t total = 0;
  BR_DISPATCH_ELEM("bitops_hamming_total_cpu", elem_bytes,
                   total = hamming_total_typed<T>(static_cast<const T*>(a), static_cast<const T*>(b), n));
  return total;
}

void bitops_extract_cpu(const void* a, uint8_t* out, int64_t n, int elem_bytes, int bits) {
  if (bits < 1 || bits > 8 * elem_bytes) throw std::invalid_argument("bitops_extract_cpu: bits out of range");
  BR_DISPATCH_ELEM("bitops_extract_cpu", elem_bytes, extract_typed<T>(static_cast<const T*>(a), out, n, bits));
}

}  // namespace bitrobust::bits
