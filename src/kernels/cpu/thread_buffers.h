#pragma once
// Scratch buffers of the threads of one OpenMP region, laid out in one allocation.
#include <cstddef>

namespace bitrobust::kernels {

/// Elements of T from one thread's buffer to the next's, for buffers of `count` elements: rounded
/// up to whole 64-byte cache lines, plus one line, so that no two threads' buffers share a line
/// whatever the allocation's alignment. Buffers of a few elements (a 4 x 4 plane's pairs when
/// pooling) would otherwise share lines, and the threads' stores would take each line from the
/// other core at every plane: pooling [128000, 4, 4] took 1.39-1.52x the time before the padding
/// (docs/measurements.md, "bf16 inference on the CPU", 2026-12-06).
template <typename T>
constexpr size_t thread_buffer_stride(size_t count) {
  constexpr size_t line = 64 / sizeof(T) > 0 ? 64 / sizeof(T) : 1;
  return (count + line - 1) / line * line + line;
}

}  // namespace bitrobust::kernels
