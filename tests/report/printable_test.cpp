// printable(): what is printed of text from files and the command line keeps its line and the
// terminal's state; everything else is kept byte for byte.
#include <gtest/gtest.h>

#include <string>

#include "bitrobust/report/printable.h"

using bitrobust::report::printable;
using bitrobust::report::valid_utf8;

namespace {
const std::string kReplacement = "\xEF\xBF\xBD";  // U+FFFD
}

TEST(Printable, KeepsPrintableTextWhateverItsScript) {
  for (const std::string text : {"", "conv1.weight", "± 0.1% (width 64)", "Größe", "重み", "emoji \xF0\x9F\x98\x80",
                                 "U+2029 is a separator, not an override: \xE2\x80\xA9", "\xE2\x81\xA5 and \xE2\x81\xAA"}) {
    EXPECT_EQ(printable(text), text) << text;
    EXPECT_EQ(valid_utf8(text), text) << text;
  }
}

TEST(Printable, ReplacesEachControlCharacterWithOneReplacementCharacter) {
  EXPECT_EQ(printable("a\nb"), "a" + kReplacement + "b");
  EXPECT_EQ(printable("\x1b[2J"), kReplacement + "[2J");
  EXPECT_EQ(printable(std::string("a\0b", 3)), "a" + kReplacement + "b");
  EXPECT_EQ(printable("\t\r\x7f"), kReplacement + kReplacement + kReplacement);
  // C1 (CSI is U+009B), encoded in two bytes: one replacement each.
  EXPECT_EQ(printable("x\xC2\x9B" "31m"), "x" + kReplacement + "31m");
  EXPECT_EQ(printable("\xC2\x80\xC2\xA0"), kReplacement + "\xC2\xA0");  // U+00A0 is printable
  // Every bidi override and isolate (U+202A..U+202E, U+2066..U+2069), three bytes each.
  for (const char* bidi : {"\xE2\x80\xAA", "\xE2\x80\xAB", "\xE2\x80\xAC", "\xE2\x80\xAD", "\xE2\x80\xAE", "\xE2\x81\xA6",
                           "\xE2\x81\xA7", "\xE2\x81\xA8", "\xE2\x81\xA9"}) {
    EXPECT_EQ(printable(std::string("a") + bidi + "b"), "a" + kReplacement + "b");
  }
}

TEST(Printable, ReplacesBytesThatAreNotUtf8) {
  EXPECT_EQ(valid_utf8("caf\xE9"), "caf" + kReplacement);                 // Latin-1
  EXPECT_EQ(printable("\xC2"), kReplacement);                              // a lead byte at the end
  EXPECT_EQ(printable("\xE2\x80"), kReplacement);                          // a truncated bidi override
  EXPECT_EQ(printable("\xC0\xAF").find('/'), std::string::npos);           // an overlong '/'
  EXPECT_EQ(valid_utf8(printable("\xFF\xFE\x1b")), printable("\xFF\xFE\x1b"));  // the result is valid UTF-8
}
