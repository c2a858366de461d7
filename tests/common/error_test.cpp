#include "bitrobust/common/error.h"

#include <gtest/gtest.h>

namespace bitrobust {
namespace {

TEST(ErrorText, JsonMessagesLoseTheLibrarysTag) {
  EXPECT_EQ(json_error_text("[json.exception.parse_error.101] parse error at line 2, column 1: syntax error"),
            "parse error at line 2, column 1: syntax error");
  EXPECT_EQ(json_error_text("[not json] kept"), "[not json] kept");
}

// The CPU allocator's failure as LibTorch 1.13 and 2.x word it: the size is kept, exactly and in GiB,
// and neither the source location nor the failed condition reaches the user.
TEST(ErrorText, TorchAllocationFailuresSayOutOfMemoryWithTheSize) {
  for (const std::string what :
       {"[enforce fail at alloc_cpu.cpp:75] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
        "allocate 1644167168 bytes. Error code 12 (Cannot allocate memory)",
        "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried to allocate "
        "1644167168 bytes."}) {
    const std::string text = torch_error_text(what);
    EXPECT_EQ(text.rfind("out of memory: one block of 1644167168 bytes (1.5 GiB) could not be allocated", 0), 0u)
        << text;
    EXPECT_NE(text.find("ulimit -v"), std::string::npos) << text;
    EXPECT_EQ(text.find("enforce"), std::string::npos) << text;
  }
}

TEST(ErrorText, OtherTorchMessagesLoseOnlyTheEnforceLocation) {
  EXPECT_EQ(torch_error_text("[enforce fail at inline_container.cc:222] . file not found: archive/data.pkl"),
            "file not found: archive/data.pkl");
  const std::string plain = "Expected all tensors to be on the same device, but found at least two devices";
  EXPECT_EQ(torch_error_text(plain), plain);
  // Without the sentence after the location there is nothing better to say than the whole text.
  EXPECT_EQ(torch_error_text("[enforce fail at x.cpp:1] cond"), "[enforce fail at x.cpp:1] cond");
}

}  // namespace
}  // namespace bitrobust
