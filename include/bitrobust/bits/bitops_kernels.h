#pragma once
// Torch-free element-wise bit operations over raw pointers (CPU: OpenMP; CUDA: stream).
// Elements are unsigned integers of elem_bytes = 1, 2 or 4 bytes (int8/int16/int32 tensors are read
// as their two's complement bit patterns). All arrays are contiguous with n elements. The torch-facing
// API is bitrobust/bits/bitops.h.
#include <cstdint>

namespace bitrobust::bits {

/// Binary operations out = op(a, b).
enum class BitBinaryOp : int {
  And = 0,       ///< a & b
  Or = 1,        ///< a | b (set the bits of mask b to 1)
  Xor = 2,       ///< a ^ b (flip the bits of mask b)
  AndNot = 3,    ///< a & ~b (set the bits of mask b to 0)
  MsbDiff = 4,   ///< only the highest bit of a ^ b (0 when a == b)
};

void bitops_binary_cpu(BitBinaryOp op, const void* a, const void* b, void* out, int64_t n, int elem_bytes);
void bitops_not_cpu(const void* a, void* out, int64_t n, int elem_bytes);
/// out[i] = number of set bits of a[i] (0..32).
void bitops_popcount_cpu(const void* a, uint8_t* out, int64_t n, int elem_bytes);
/// out[i] = number of bits in which a[i] and b[i] differ.
void bitops_hamming_cpu(const void* a, const void* b, uint8_t* out, int64_t n, int elem_bytes);
/// Sum over i of the number of bits in which a[i] and b[i] differ.
int64_t bitops_hamming_total_cpu(const void* a, const void* b, int64_t n, int elem_bytes);
/// out[i * bits + k] = bit k of a[i] (k = 0 is the least significant bit), for k < bits.
void bitops_extract_cpu(const void* a, uint8_t* out, int64_t n, int elem_bytes, int bits);

// CUDA twins, bit-identical, enqueued on `stream` (a cudaStream_t); pointers are device pointers.
// They throw std::runtime_error on a launch error.
void bitops_binary_cuda(BitBinaryOp op, const void* a, const void* b, void* out, int64_t n, int elem_bytes,
                        void* stream);
void bitops_not_cuda(const void* a, void* out, int64_t n, int elem_bytes, void* stream);
void bitops_popcount_cuda(const void* a, uint8_t* out, int64_t n, int elem_bytes, void* stream);
void bitops_hamming_cuda(const void* a, const void* b, uint8_t* out, int64_t n, int elem_bytes, void* stream);
/// Adds the total to *total (device pointer; the caller zeroes it first).
void bitops_hamming_total_cuda(const void* a, const void* b, int64_t n, int elem_bytes,
                               unsigned long long* total, void* stream);
void bitops_extract_cuda(const void* a, uint8_t* out, int64_t n, int elem_bytes, int bits, void* stream);

}  // namespace bitrobust::bits
