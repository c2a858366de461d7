#pragma once
// Short fingerprints of what a result was computed from (images, weights, layouts): a CRC-32 of
// bytes, written as "crc32 <8 hex digits>".
#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace bitrobust {

/// CRC-32 (zlib's) of the bytes added so far, in order.
class Crc32 {
 public:
  Crc32& add(const void* bytes, size_t size);
  /// A tensor's bytes as stored, row-major (copied to the CPU first where it is elsewhere).
  Crc32& add(const at::Tensor& tensor);
  uint32_t value() const { return crc_; }
  /// "crc32 <8 hex digits>".
  std::string text() const;

 private:
  uint32_t crc_ = 0;  // zlib's crc32 of no bytes
};

}  // namespace bitrobust
