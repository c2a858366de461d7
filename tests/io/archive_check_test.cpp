#include "bitrobust/io/archive_check.h"

#include <gtest/gtest.h>

#include <string>
#include <optional>
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
           "  model : __torch__.Module", "  __annotations__ = []", "  __annotations__[\"0\"] = __torch__.___torch_mangle_3.Module",
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
           "  9weight : Tensor", "  x : __torch__.torch.classes.quantized.LinearPackedParamsBase",
           "  x : __torch__.___torch_mangle_.Module", "  x : __torch__.___torch_mangle_1", "  x : __torch__.a.b", "  __parameters__ = [\"weight\"]", "  __parameters__ = [\"we\\\"ight\", ]",
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
    // Storages of "<archive>/data.pkl" are the records "<archive>/data/<key>".
    const std::string folder = record.name.substr(0, record.name.rfind('.')) + "/";
    const auto storage_bytes = [&](const std::string& key) -> std::optional<uint64_t> {
      for (const io::ZipRecord& r : io::read_zip_directory(path, "model file"))
        if (r.name == folder + key) return r.uncompressed_size;
      return std::nullopt;
    };
    EXPECT_EQ(io::pickle_problem(bytes, storage_bytes), "") << record.name;
    // Every proper prefix lacks its STOP (or is cut inside an argument): never accepted.
    for (size_t cut : {size_t{0}, bytes.size() / 3, bytes.size() - 1})
      EXPECT_NE(io::pickle_problem(bytes.substr(0, cut), storage_bytes), "") << record.name << " cut to " << cut;
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
  EXPECT_EQ(problem(pickle({"(]q", 0, "(K", 1, "K", 2, "eh", 0, "t."})), "");  // ([1, 2], memo 0 read back)
  EXPECT_EQ(problem(pickle({"}(X", 1, 0, 0, 0, "aK", 1, "u."})), "");          // {"a": 1}
  // The fuzzer's find: a memo index is a size to LibTorch 1.13 (2^31 entries: 32 GB).
  EXPECT_NE(problem(pickle({"Nr", 0xff, 0xff, 0xff, 0x7f, "."})).find("memo index 2147483647 after 0 entries at byte 3"),
            std::string::npos);
  EXPECT_NE(problem(pickle({"Nq", 0, "h", 1, "\x86."})).find("memo index 1 read before it is written"),
            std::string::npos);
  EXPECT_NE(problem(pickle({"X", 0xff, 0xff, 0xff, 0x0f, "abc."})).find("a string of 268435455 bytes"),
            std::string::npos);
  EXPECT_NE(problem(pickle({"R."})).find("fewer values than it takes"), std::string::npos);
  EXPECT_NE(problem(pickle({"N(NR."})).find("fewer values than it takes"), std::string::npos);  // across a MARK
  EXPECT_NE(problem(pickle({"K", 1, "K", 2, "."})).find("STOP with values or MARKs left"), std::string::npos);
  EXPECT_NE(problem(pickle({"}(K", 1, "u."})).find("odd number"), std::string::npos);
  EXPECT_NE(problem(pickle({"K", 1, "e."})).find("without one"), std::string::npos);
  EXPECT_NE(problem(pickle({"(K", 1, "e."})).find("without a list or dict"), std::string::npos);
  EXPECT_NE(problem(pickle({"cmodule\nname."})).find("GLOBAL without its two lines"), std::string::npos);
  EXPECT_NE(problem(pickle({0x8a, 9, "123456789."})).find("LONG1 of 9 bytes"), std::string::npos);
  EXPECT_NE(problem(pickle({"/."})).find("opcode 0x2F"), std::string::npos);
  EXPECT_NE(problem(pickle({"N"})).find("no STOP"), std::string::npos);
  EXPECT_NE(problem(pickle({"N0."})).find("opcode 0x30"), std::string::npos);  // POP: Pickler never writes it
}

/// A pickle of one storage tuple, as Pickler writes a tensor's: ("storage", torch.<type>, key, "cpu", numel).
std::string storage_pickle(const char* type, int numel) {
  return pickle({"(X", 7, 0, 0, 0, "storagectorch\n", type, "\nX", 1, 0, 0, 0, "0X", 3, 0, 0, 0, "cpuK", numel, "tQ."});
}

TEST(ArchiveCheck, PicklesCallOnlyWhatAnArchiveOfTensorsNeeds) {
  const auto problem = [](const std::string& bytes) { return io::pickle_problem(bytes); };
  // A review's finds: each of these reaches LibTorch code that trusts its arguments further.
  EXPECT_NE(problem(pickle({"ctorch._utils\n_rebuild_qtensor\n)R."})).find("global torch._utils._rebuild_qtensor"),
            std::string::npos);
  EXPECT_NE(problem(pickle({"c__torch__.torch.classes.quantized\nLinearPackedParamsBase\n)\x81."}))
                .find("global __torch__.torch.classes.quantized.LinearPackedParamsBase"),
            std::string::npos);
  EXPECT_NE(problem(pickle({"ctorch._tensor\n_rebuild_from_type_v2\n)R."})).find("global torch._tensor"),
            std::string::npos);
  EXPECT_NE(problem(pickle({"ctorch\ndevice\n)\x81."})).find("NEWOBJ of something other than a module class"),
            std::string::npos);
  // Nesting: LibTorch destroys values recursively.
  std::string deep = pickle({"N"});
  for (int i = 0; i < 100; ++i) deep += "\x85";
  EXPECT_NE(problem(deep + ".").find("values nested more than 64 deep"), std::string::npos);
  std::string sixty = pickle({"N"});
  for (int i = 0; i < 60; ++i) sixty += "\x85";
  EXPECT_EQ(problem(sixty + "."), "");
  // Type tags go to LibTorch's TorchScript type parser.
  const auto tagged = [](const std::string& type) {
    std::string bytes = pickle({"ctorch.jit._pickle\nrestore_type_tag\n}X"});
    for (int i = 0; i < 4; ++i) bytes += static_cast<char>((type.size() >> (8 * i)) & 0xFF);
    return bytes + type + "\x86R.";
  };
  EXPECT_EQ(problem(tagged("Dict[str, Tensor]")), "");
  EXPECT_NE(problem(tagged("Dict[str, Tensor")).find("a type tag that is no type of an attribute"), std::string::npos);
  // A storage's size is its record's.
  EXPECT_EQ(io::pickle_problem(storage_pickle("FloatStorage", 6), [](const std::string& key) -> std::optional<uint64_t> {
              return key == "0" ? std::optional<uint64_t>(24) : std::nullopt;
            }),
            "");
  EXPECT_NE(io::pickle_problem(storage_pickle("FloatStorage", 6), [](const std::string&) -> std::optional<uint64_t> {
              return 20;
            }).find("storage '0' of 6 elements, which its record of 20 bytes does not hold"),
            std::string::npos);
  EXPECT_NE(problem(storage_pickle("FloatStorage", 6)).find("has no record"), std::string::npos);
  EXPECT_NE(problem(storage_pickle("QUInt8Storage", 6)).find("global torch.QUInt8Storage"), std::string::npos);
}

TEST(ArchiveCheck, RecordNamesCountWithoutCaseAsLibTorchFindsThem) {
  test_util::TempDir dir;
  const std::string good = dir.file("good.pt"), upper = dir.file("upper.pt"), both = dir.file("both.pt");
  io::save_model_file(good, test_util::quantized_model_file(8));
  const std::string huge_memo = pickle({"Nr", 0xff, 0xff, 0xff, 0x7f, "."});
  // LibTorch would read DATA.PKL as data.pkl.
  test_util::copy_with_record_renamed(good, upper, "data.pkl", "DATA.PKL", huge_memo, false);
  try {
    io::load_model_file(upper);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/DATA.PKL is no pickle Torch writes: memo index 2147483647"), std::string::npos)
        << e.what();
  }
  test_util::copy_with_record_renamed(good, both, "data.pkl", "DATA.PKL", huge_memo, true);
  try {
    io::load_model_file(both);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("differ only in case"), std::string::npos) << e.what();
  }
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
  struct Unset {
    ~Unset() { ::unsetenv("BITROBUST_TRUST_ARCHIVES"); }
  } unset;
  ::setenv("BITROBUST_TRUST_ARCHIVES", "1", 1);
  EXPECT_NO_THROW(io::load_model_file(commented));
  ::setenv("BITROBUST_TRUST_ARCHIVES", "0", 1);  // (0 is the default: checked)
  EXPECT_ERROR_CONTAINS(io::load_model_file(commented), "not written by bitrobust");
  ::setenv("BITROBUST_TRUST_ARCHIVES", "yes", 1);
  EXPECT_ERROR_CONTAINS(io::load_model_file(commented), "BITROBUST_TRUST_ARCHIVES must be 1");
}

TEST(ArchiveCheck, AnArchiveWithMoreThan256MemoEntriesLoads) {
  // Past 256 memo entries Pickler writes LONG_BINPUT and LONG_BINGET (ResNet-20 with BatchNorm: its
  // 120 tensors' names, storages and objects make more than 256).
  test_util::TempDir dir;
  io::ModelFile f;
  f.spec.arch = "resnet20";
  f.spec.norm = "bn";
  f.spec.channels = 4;
  f.spec.in_channels = 1;
  f.spec.height = f.spec.width = 28;
  f.net = models::build_model(f.spec);
  const std::string path = dir.file("resnet20.pt");
  io::save_model_file(path, f);
  // Memo entry 256 is the first written as LONG_BINPUT: r, then 256 in four little-endian bytes.
  bool long_memo = false;
  for (const io::ZipRecord& record : io::read_zip_directory(path, "model file")) {
    if (record.name.size() < 8 || record.name.compare(record.name.size() - 8, 8, "data.pkl") != 0) continue;
    long_memo = io::read_zip_record(path, record, "model file", 1 << 24).find(std::string("r\x00\x01\x00\x00", 5)) !=
                std::string::npos;
  }
  ASSERT_TRUE(long_memo);
  EXPECT_NO_THROW(io::load_model_file(path));
}
