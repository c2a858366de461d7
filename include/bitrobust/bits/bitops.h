#pragma once
// Element-wise bit operations on integer tensors (uint8, int8, int16, int32), on CPU and CUDA with
// identical results. Signed tensors are treated as their two's complement bit patterns (int16
// tensors hold the uint16 codes of 9..16-bit quantization). Binary operations need both inputs of the
// same dtype, shape and device, else bitrobust::Error. Inputs may be non-contiguous; outputs are new
// contiguous tensors.
//
// NOTE [Bit numbering]: bit k of an element is the bit of value 2^k: bit 0 is the least significant
// bit (LSB), bit 8*sizeof - 1 the most significant of the container. For m-bit codes, bit m-1 is the
// code's MSB.
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace bitrobust::bits {

at::Tensor bit_and(const at::Tensor& a, const at::Tensor& b);
at::Tensor bit_or(const at::Tensor& a, const at::Tensor& b);
at::Tensor bit_xor(const at::Tensor& a, const at::Tensor& b);
at::Tensor bit_not(const at::Tensor& a);

/// codes ^ mask: flips the bits set in mask.
at::Tensor flip_bits(const at::Tensor& codes, const at::Tensor& mask);
/// codes | mask: sets the bits set in mask to 1.
at::Tensor set_bits(const at::Tensor& codes, const at::Tensor& mask);
/// codes & ~mask: sets the bits set in mask to 0.
at::Tensor clear_bits(const at::Tensor& codes, const at::Tensor& mask);

/// The low `bits` bits of each element as a uint8 tensor of 0/1 with shape [..., bits]; index k of
/// the last dimension is bit k (LSB first, NOTE [Bit numbering]). 1 <= bits <= container width.
at::Tensor extract_bits(const at::Tensor& codes, int bits);

/// Number of set bits of each element, as uint8 (0..32), same shape.
at::Tensor popcount(const at::Tensor& codes);

/// Number of bits in which a and b differ, per element, as uint8 (0..32), same shape.
at::Tensor hamming_distance(const at::Tensor& a, const at::Tensor& b);

/// Total number of differing bits over all elements.
int64_t hamming_distance_total(const at::Tensor& a, const at::Tensor& b);

/// Per element, the mask with only the highest bit in which a and b differ (0 where they are
/// equal); same dtype and shape as a.
at::Tensor most_significant_difference(const at::Tensor& a, const at::Tensor& b);

/// Projection onto the most significant differing bit, as the reference's int_msb_projection (its
/// adversarial bit error attack keeps a perturbation within one bit per weight this way): per
/// element, `original` with only its highest bit that differs from `perturbed` changed to
/// perturbed's, so the result differs from original in at most one bit (the sign bit of a signed
/// container counts as its highest), and is original where the two are equal.
at::Tensor msb_projection(const at::Tensor& original, const at::Tensor& perturbed);

}  // namespace bitrobust::bits
