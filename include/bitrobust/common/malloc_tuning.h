#pragma once

namespace bitrobust {
/// Makes glibc's malloc keep freed memory in the process instead of handing it back to the kernel.
/// LibTorch on the CPU allocates and frees its activation and gradient buffers (megabytes each)
/// every step; with glibc's defaults each such buffer comes from a fresh mmap and is faulted in and
/// zeroed page by page by the kernel, which cost about a quarter of a LeNet training step here
/// (docs/measurements.md). Memory peaks are unchanged: the buffers are reused, not accumulated.
/// Returns false where the C library is not glibc (nothing is changed there).
bool keep_freed_memory_in_process();
}  // namespace bitrobust
