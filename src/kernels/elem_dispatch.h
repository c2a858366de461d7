#pragma once
// Shared by the CPU and CUDA element-wise bit operations: they read elements of 1, 2 or 4 bytes as
// unsigned integers, so both dispatch on the element size the same way.
#include <stdexcept>
#include <string>

namespace bitrobust::bits {

[[noreturn]] inline void bad_elem_bytes(const char* what) {
  throw std::invalid_argument(std::string(what) + ": elem_bytes must be 1, 2 or 4");
}

}  // namespace bitrobust::bits

/// Runs CALL with T = the unsigned type of elem_bytes bytes; any other size throws, naming `what`.
#define BR_DISPATCH_ELEM(what, elem_bytes, CALL)                    \
  switch (elem_bytes) {                                             \
    case 1: { using T = uint8_t; CALL; } break;                     \
    case 2: { using T = uint16_t; CALL; } break;                    \
    case 4: { using T = uint32_t; CALL; } break;                    \
    default: ::bitrobust::bits::bad_elem_bytes(what);               \
  }
