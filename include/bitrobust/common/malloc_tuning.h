#pragma once

namespace bitrobust {
/// Makes glibc's malloc keep freed memory in the process instead of handing it back to the kernel.
/// LibTorch on the CPU allocates and frees its activation and gradient buffers (megabytes each)
/// every step; with glibc's defaults each such buffer comes from a fresh mmap and is faulted in and
/// zeroed page by page by the kernel, which cost about a quarter of a LeNet training step here and
/// half of a LeNet evaluation at batch 500 (docs/measurements.md). So every block comes from the
/// heap, and the heap keeps up to 1 GiB of what is freed. The price is memory held between steps:
/// peak RSS measured 2-16% higher for LeNet, 26-87% for SimpleNet on CIFAR-10, where runs were 2x
/// faster or more (docs/measurements.md, "Every buffer from the heap").
/// Returns false where the C library is not glibc (nothing is changed there).
bool keep_freed_memory_in_process();
}  // namespace bitrobust
