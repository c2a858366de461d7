#include "bitrobust/common/malloc_tuning.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace bitrobust {
namespace {

#if defined(__GLIBC__)
TEST(MallocTuning, TrainingSizedBuffersComeFromTheHeapNotFreshMappings) {
  ASSERT_TRUE(keep_freed_memory_in_process());
  const auto expect_from_the_heap = [](size_t bytes, const char* what) {
    for (int round = 0; round < 3; ++round) {
      const size_t mapped_before = mallinfo2().hblks;
      void* buffer = std::malloc(bytes);
      ASSERT_NE(buffer, nullptr);
      std::memset(buffer, round, bytes);
      EXPECT_EQ(mallinfo2().hblks, mapped_before) << what << " was served by mmap in round " << round;
      std::free(buffer);
    }
  };
  // 12.5 MB is the size of one LeNet activation at batch 128; glibc's default would mmap it (and
  // have the kernel zero it page by page) on every step.
  expect_from_the_heap(size_t{128} * 32 * 28 * 28 * 4, "the 12.5 MB training buffer");
  // 50 MB, LeNet's first activation at evaluation batch 500: above the largest mmap threshold glibc
  // accepts (32 MiB), so only switching mmap off keeps it on the heap.
  expect_from_the_heap(size_t{500} * 32 * 28 * 28 * 4, "the 50 MB evaluation buffer");
}
#else
TEST(MallocTuning, ReportsThatNothingChangedOutsideGlibc) { EXPECT_FALSE(keep_freed_memory_in_process()); }
#endif

}  // namespace
}  // namespace bitrobust
