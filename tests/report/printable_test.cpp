// printable(): what is printed of text from files and the command line keeps its line and the
// terminal's state; everything else is kept byte for byte.
#include <gtest/gtest.h>

#include <string>

#include "bitrobust/report/printable.h"

namespace report = bitrobust::report;
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

// Error messages: one line whatever LibTorch's text held, and a path of bytes that are not UTF-8
// still names its bytes.
TEST(PrintableMessage, IsOneLineAndWritesBytesThatAreNotUtf8AsHex) {
  EXPECT_EQ(report::printable_message("checkpoint x: \nObjectAttributeError:\n\tno attribute"),
            "checkpoint x:  ObjectAttributeError:  no attribute");
  EXPECT_EQ(report::printable_message("model file caf\xE9.pt does not exist"), "model file caf\\xE9.pt does not exist");
  EXPECT_EQ(report::printable_message("Gr\xC3\xB6\xC3\x9F" "e \xE9\x87\x8D"), "Gr\xC3\xB6\xC3\x9F" "e \xE9\x87\x8D");
  // Overlong forms, surrogates, code points above U+10FFFF and truncated sequences are not UTF-8.
  EXPECT_EQ(report::printable_message("\xC0\xAF"), "\\xC0\\xAF");
  EXPECT_EQ(report::printable_message("\xED\xA0\x80"), "\\xED\\xA0\\x80");
  EXPECT_EQ(report::printable_message("\xF4\x90\x80\x80"), "\\xF4\\x90\\x80\\x80");
  EXPECT_EQ(report::printable_message("x\xE2\x82"), "x\\xE2\\x82");
  EXPECT_EQ(report::printable_message("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");
  // What is left is printable(): terminal escapes and bidi overrides still become U+FFFD.
  EXPECT_EQ(report::printable_message("a\x1b[2Jb\xE2\x80\xAE"), "a" + kReplacement + "[2Jb" + kReplacement);
}

// One U+FFFD per maximal subpart, as Unicode recommends and Python's decoder does (the counts
// below are Python's `bytes.decode("utf-8", "replace")`).
TEST(Printable, OneReplacementPerMaximalSubpart) {
  const auto replacements = [](const std::string& raw) {
    const std::string s = valid_utf8(raw);
    size_t n = 0;
    for (size_t at = s.find(kReplacement); at != std::string::npos; at = s.find(kReplacement, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(replacements("\xE2\x80"), 1u);                 // truncated
  EXPECT_EQ(replacements("\xF0\x9F\x98x"), 1u);           // truncated before an ASCII byte
  EXPECT_EQ(replacements("\xED\xA0\x80"), 3u);            // a surrogate: no subpart fits
  EXPECT_EQ(replacements("\xC0\xAF"), 2u);                 // overlong
  EXPECT_EQ(replacements("\xF4\x90\x80\x80"), 4u);       // above U+10FFFF
  EXPECT_EQ(replacements("a\xFF\xFE" "b"), 2u);
  EXPECT_EQ(valid_utf8("\xE2\x80\xE2\x82\xAC"), kReplacement + "\xE2\x82\xAC");  // then a whole euro sign
}

TEST(Printable, ReplacesBytesThatAreNotUtf8) {
  EXPECT_EQ(valid_utf8("caf\xE9"), "caf" + kReplacement);                 // Latin-1
  EXPECT_EQ(printable("\xC2"), kReplacement);                              // a lead byte at the end
  EXPECT_EQ(printable("\xE2\x80"), kReplacement);                          // a truncated bidi override
  EXPECT_EQ(printable("\xC0\xAF").find('/'), std::string::npos);           // an overlong '/'
  EXPECT_EQ(valid_utf8(printable("\xFF\xFE\x1b")), printable("\xFF\xFE\x1b"));  // the result is valid UTF-8
}
