#include "bitrobust/common/fingerprint.h"

#include <zlib.h>

#include <cstdio>

namespace bitrobust {

Crc32& Crc32::add(const void* bytes, size_t size) {
  crc_ = static_cast<uint32_t>(crc32_z(crc_, static_cast<const Bytef*>(bytes), size));
  return *this;
}

Crc32& Crc32::add(const at::Tensor& tensor) {
  const at::Tensor bytes = tensor.detach().cpu().contiguous();
  return add(bytes.data_ptr(), static_cast<size_t>(bytes.nbytes()));
}

std::string Crc32::text() const {
  char hex[16];
  std::snprintf(hex, sizeof hex, "%08x", static_cast<unsigned>(crc_));
  return std::string("crc32 ") + hex;
}

}  // namespace bitrobust
