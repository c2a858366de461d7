#include "bitrobust/io/archive_check.h"

#include <gtest/gtest.h>

#include <string>
#include <variant>

#include "bitrobust/common/error.h"
#include "bitrobust/io/model_file.h"
#include "bitrobust/io/zip_checksums.h"
#include "archive_util.h"
#include "model_fixtures.h"
#include "test_util.h"

using namespace bitrobust;

TEST(ArchiveCheck, TheFormsPrintClassWritesForAttributesAreLines) {
  for (const char* line : {
           "", "class Module(Module):", "  __parameters__ = []", "  __parameters__ = [\"weight\", \"bias\", ]",
           "  __buffers__ = [\"p0\", \"p1\", ]", "  __forward_hooks__ = []", "  weight : Tensor", "  meta : str",
           "  training : bool", "  steps : int", "  rate : float", "  fc1 : __torch__.___torch_mangle_7.Module",
           "  model : __torch__.Module", "  __annotations__ = []", "  __annotations__[\"0\"] = __torch__.torch.nn.Linear",
           "  state : Dict[str, List[Optional[Tensor]]]", "  pair : Tuple[int, float]"}) {
    EXPECT_TRUE(io::is_attribute_module_line(line)) << "'" << line << "'";
  }
}

TEST(ArchiveCheck, CodeAndMalformedDeclarationsAreNot) {
  for (const char* line : {
           // the fuzzer's find: LibTorch 1.13 takes it for a class constant without a type, and crashes
           "  __paraoeters__ = [\"weight\", \"bias\", ]",
           "  x : Final[int] = 3", "  x : Tensor = 3", "  def forward(self, x):", "    return x", "import torch",
           "class Module(Module): pass", "class Module:", " weight : Tensor", "  weight: Tensor", "  weight : Tensorx",
           "  weight : List[Tensor", "  weight : List[]", "  weight : __torch__", "  weight : __torch__..Module",
           "  9weight : Tensor", "  __parameters__ = [\"weight\"]", "  __parameters__ = [\"we\\\"ight\", ]",
           "  __annotations__[\"0\"] = 3", "  x : Tensor  ", "\tx : Tensor",
           "  x : List[List[List[List[List[List[List[List[List[List[Tensor]]]]]]]]]]"}) {
    EXPECT_FALSE(io::is_attribute_module_line(line)) << "'" << line << "'";
  }
}

TEST(ArchiveCheck, AModelFileWithCodeBeyondDeclarationsIsAnErrorBeforeLibTorchParsesIt) {
  test_util::TempDir dir;
  const std::string good = dir.file("good.pt"), bad = dir.file("bad.pt");
  io::save_model_file(good, test_util::quantized_model_file(8));
  EXPECT_NO_THROW(io::load_model_file(good));
  // The record the fuzzer changed (one letter of __parameters__), written with matching checksums:
  // LibTorch 1.13's TorchScript compiler dereferenced a null type on it (SEGV) before this check.
  size_t changed = 0;
  test_util::copy_with_record_edited(good, bad, "code/", [&changed](std::string text) {
    const size_t at = text.find("__parameters__");
    if (at != std::string::npos && changed == 0) {
      text[at + 6] = 'o';
      ++changed;
    }
    return text;
  });
  ASSERT_EQ(changed, 1u);
  try {
    io::load_model_file(bad);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("model file " + bad + " is damaged or not written by bitrobust"), std::string::npos) << message;
    EXPECT_NE(message.find("has a line 2 ('  __paraoeters__ = "), std::string::npos) << message;
  }
}

TEST(ArchiveCheck, EveryPickleTorchWritesPassesTheScan) {
  test_util::TempDir dir;
  const std::string path = dir.file("m.pt");
  io::save_model_file(path, test_util::quantized_model_file(8));
  size_t pickles = 0;
  for (const io::ZipRecord& record : io::read_zip_directory(path, "model file")) {
    const bool pickle = record.name.find(".pkl") != std::string::npos || record.name.find(".debug_pkl") != std::string::npos;
    if (!pickle) continue;
    ++pickles;
    const std::string bytes = io::read_zip_record(path, record, "model file", 1 << 24);
    EXPECT_EQ(io::pickle_problem(bytes), "") << record.name;
    // Every proper prefix lacks its STOP (or is cut inside an argument): never accepted.
    for (size_t cut : {size_t{0}, bytes.size() / 3, bytes.size() - 1})
      EXPECT_NE(io::pickle_problem(bytes.substr(0, cut)), "") << record.name << " cut to " << cut;
  }
  EXPECT_GE(pickles, 2u);  // data.pkl, constants.pkl (and the code's debug pickles)
}

/// Bytes of a pickle, written as opcodes and arguments: numbers are bytes, strings their characters.
std::string pickle(std::initializer_list<std::variant<int, const char*>> parts) {
  std::string bytes = "\x80\x02";  // PROTO 2
  for (const auto& part : parts) {
    if (std::holds_alternative<int>(part)) bytes += static_cast<char>(std::get<int>(part));
    else bytes += std::get<const char*>(part);
  }
  return bytes;
}

TEST(ArchiveCheck, PicklesLibTorchWouldTrustAreRefused) {
  const auto problem = [](const std::string& bytes) { return io::pickle_problem(bytes); };
  EXPECT_EQ(problem(pickle({"N."})), "");
  EXPECT_EQ(problem(pickle({"]q", 0, "(K", 1, "K", 2, "eh", 0, "0."})), "");  // [1, 2], memo 0 read back
  EXPECT_EQ(problem(pickle({"}(X", 1, 0, 0, 0, "aK", 1, "u."})), "");          // {"a": 1}
  // The fuzzer's find: a memo index is a size to LibTorch 1.13 (2^31 entries: 32 GB).
  EXPECT_NE(problem(pickle({"Nr", 0xff, 0xff, 0xff, 0x7f, "."})).find("memo index 2147483647 after 0 entries at byte 3"),
            std::string::npos);
  EXPECT_NE(problem(pickle({"Nq", 0, "h", 1, "0."})).find("memo index 1 read before it is written"), std::string::npos);
  EXPECT_NE(problem(pickle({"X", 0xff, 0xff, 0xff, 0x0f, "abc."})).find("a string of 268435455 bytes"),
            std::string::npos);
  EXPECT_NE(problem(pickle({"R."})).find("fewer values than it takes"), std::string::npos);
  EXPECT_NE(problem(pickle({"N(NR0."})).find("fewer values than it takes"), std::string::npos);  // across a MARK
  EXPECT_NE(problem(pickle({"K", 1, "K", 2, "."})).find("STOP with values or MARKs left"), std::string::npos);
  EXPECT_NE(problem(pickle({"}(K", 1, "u."})).find("odd number"), std::string::npos);
  EXPECT_NE(problem(pickle({"K", 1, "e."})).find("without one"), std::string::npos);
  EXPECT_NE(problem(pickle({"(K", 1, "e."})).find("without a list or dict"), std::string::npos);
  EXPECT_NE(problem(pickle({"cmodule\nname."})).find("GLOBAL without its two lines"), std::string::npos);
  EXPECT_NE(problem(pickle({0x8a, 9, "123456789."})).find("LONG1 of 9 bytes"), std::string::npos);
  EXPECT_NE(problem(pickle({"/."})).find("opcode 0x2F"), std::string::npos);
  EXPECT_NE(problem(pickle({"N"})).find("no STOP"), std::string::npos);
}

TEST(ArchiveCheck, AModelFileWithSuchAPickleIsAnErrorNamingTheRecord) {
  test_util::TempDir dir;
  const std::string good = dir.file("good.pt"), bad = dir.file("bad.pt");
  io::save_model_file(good, test_util::quantized_model_file(8));
  ASSERT_EQ(test_util::copy_with_record_edited(good, bad, "data.pkl",
                                               [](const std::string&) { return std::string("\x80\x02Nr\xff\xff\xff\x7f."); }),
            1u);
  try {
    io::load_model_file(bad);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("model file " + bad + " is damaged or not written by bitrobust: its record "),
              std::string::npos)
        << message;
    EXPECT_NE(message.find("/data.pkl is no pickle Torch writes: memo index 2147483647 after 0 entries at byte 3"),
              std::string::npos)
        << message;
  }
}

TEST(ArchiveCheck, TheEnvironmentCanTrustAnArchiveTheChecksDoNotKnow) {
  test_util::TempDir dir;
  const std::string good = dir.file("good.pt"), commented = dir.file("commented.pt");
  io::save_model_file(good, test_util::quantized_model_file(8));
  // A comment LibTorch reads past, and no writer of Torch's puts there.
  ASSERT_GE(test_util::copy_with_record_edited(good, commented, "code/", [](std::string text) {
              return text.find("class ") == 0 ? "# a comment\n" + text : text;
            }),
            1u);
  EXPECT_THROW(io::load_model_file(commented), Error);
  ::setenv("BITROBUST_TRUST_ARCHIVES", "1", 1);
  EXPECT_NO_THROW(io::load_model_file(commented));
  ::setenv("BITROBUST_TRUST_ARCHIVES", "yes", 1);
  EXPECT_THROW(io::load_model_file(commented), Error);
  ::unsetenv("BITROBUST_TRUST_ARCHIVES");
}
