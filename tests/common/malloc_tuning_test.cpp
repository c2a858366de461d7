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
  // 12.5 MB is the size of one LeNet activation at batch 128; glibc's default would mmap it (and
  // have the kernel zero it page by page) on every step.
  constexpr size_t kBytes = 128 * 32 * 28 * 28 * 4;
  for (int round = 0; round < 3; ++round) {
    const size_t mapped_before = mallinfo2().hblks;
    void* buffer = std::malloc(kBytes);
    ASSERT_NE(buffer, nullptr);
    std::memset(buffer, round, kBytes);
    EXPECT_EQ(mallinfo2().hblks, mapped_before) << "the buffer was served by mmap in round " << round;
    std::free(buffer);
  }
  // 50 MB, LeNet's first activation at evaluation batch 500: above the largest mmap threshold glibc
  // accepts (32 MiB), so only switching mmap off keeps it on the heap.
  constexpr size_t kEvalBytes = 500 * 32 * 28 * 28 * 4;
  for (int round = 0; round < 2; ++round) {
    const size_t mapped_before = mallinfo2().hblks;
    void* buffer = std::malloc(kEvalBytes);
    ASSERT_NE(buffer, nullptr);
    std::memset(buffer, round, kEvalBytes);
    EXPECT_EQ(mallinfo2().hblks, mapped_before) << "the 50 MB buffer was served by mmap in round " << round;
    std::free(buffer);
  }
}
#else
TEST(MallocTuning, ReportsThatNothingChangedOutsideGlibc) { EXPECT_FALSE(keep_freed_memory_in_process()); }
#endif

}  // namespace
}  // namespace bitrobust
