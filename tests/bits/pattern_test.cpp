// Explicit bit error patterns: drawing equals injecting, files round-trip, files that do not fit the
// model are rejected with clear errors.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bitrobust/bits/bitops.h"
#include "bitrobust/bits/pattern.h"
#include "bitrobust/common/error.h"
#include "bitrobust/config.h"
#include "test_util.h"

namespace bitrobust::bits {
namespace {

using test_util::error_of;
using test_util::random_codes;

// A scratch directory removed with its files at the end of the test. Plain POSIX rather than
// std::filesystem: a test binary linked against the pip LibTorch (2.11) resolved
// std::filesystem::remove_all to a copy inside libtorch.so that crashed.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::getenv("TMPDIR") ? std::string(std::getenv("TMPDIR")) : std::string("/tmp")) +
                          "/bitrobust_pattern_test_XXXXXX";
    std::vector<char> buffer(pattern.begin(), pattern.end());
    buffer.push_back('\0');
    if (mkdtemp(buffer.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + pattern);
    path_ = buffer.data();
  }
  ~TempDir() {
    for (const auto& f : files_) std::remove(f.c_str());
    rmdir(path_.c_str());
  }
  std::string file(const std::string& name) {
    files_.push_back(path_ + "/" + name);
    return files_.back();
  }

 private:
  std::string path_;
  std::vector<std::string> files_;
};

std::vector<ParamSpec> small_specs() {
  return {{"conv1.weight", {16, 3, 3, 3}, 8}, {"conv1.bias", {16}, 8}, {"fc.weight", {10, 64}, 12}, {"", {}, 4}};
}

std::vector<CodeTensor> tensors_for(const std::vector<ParamSpec>& specs, uint64_t seed) {
  std::vector<CodeTensor> tensors;
  for (size_t i = 0; i < specs.size(); ++i) {
    CodeTensor t;
    t.name = specs[i].name;
    t.bits = specs[i].bits;
    t.clean = random_codes(specs[i].shape, t.bits, t.bits > 8 ? at::kShort : at::kByte, seed + i);
    t.out = at::empty_like(t.clean);
    t.param_index = static_cast<int64_t>(i);
    tensors.push_back(t);
  }
  return tensors;
}

TEST(BitPattern, DrawnPatternReplaysInjectionForEveryModel) {
  for (const char* name : {"random", "msb", "lsb2", "stuck_at_0", "stuck_at_1", "random,0to1=0.1,1to0=0.02"}) {
    const ErrorModel model = ErrorModel::parse(name, 0.05);
    const at::Tensor clean = random_codes({3000}, 6, at::kByte, 8);
    at::Tensor injected = at::empty_like(clean), replayed = at::empty_like(clean);
    const int64_t changed = inject_bit_errors(clean, 6, model, 42, 2, injected);
    const std::vector<BitFlip> flips = draw_pattern(clean.numel(), 6, model, 42, 2);
    EXPECT_EQ(apply_pattern(flips, 2, clean, 6, replayed), changed) << name;
    EXPECT_TRUE(at::equal(injected, replayed)) << name;
    EXPECT_TRUE(std::is_sorted(flips.begin(), flips.end(), [](const BitFlip& a, const BitFlip& b) {
      return a.element != b.element ? a.element < b.element : a.bit < b.bit;
    }));
    // Flips of another parameter index are ignored.
    at::Tensor untouched = at::empty_like(clean);
    EXPECT_EQ(apply_pattern(flips, 3, clean, 6, untouched), 0);
    EXPECT_TRUE(at::equal(untouched, clean));
  }
  // One bit listed twice (a flip and a set) has no defined result on CUDA: refused on every device.
  const at::Tensor clean = random_codes({100}, 6, at::kByte, 9);
  at::Tensor out = at::empty_like(clean);
  const std::vector<BitFlip> twice = {{0, 7, 2, FlipKind::Flip}, {0, 3, 1, FlipKind::Flip}, {0, 7, 2, FlipKind::Set1}};
  EXPECT_ERROR_CONTAINS(apply_pattern(twice, 0, clean, 6, out), "bit 2 of element 7 of parameter 0 is listed twice");
  const std::vector<BitFlip> distinct = {{0, 7, 2, FlipKind::Flip}, {0, 7, 3, FlipKind::Flip}, {0, 3, 2, FlipKind::Flip}};
  EXPECT_EQ(apply_pattern(distinct, 0, clean, 6, out), 3);
}

TEST(BitPattern, SaveLoadRoundTripAndModelReplay) {
  TempDir dir;
  const auto specs = small_specs();
  const ErrorModel model = ErrorModel::parse("random,0to1=0.03", 0.01);
  const BitPattern pattern = draw_pattern(specs, model, 1234, ParamSelector("weight|^$"));
  EXPECT_GT(pattern.flips.size(), 0u);
  for (const BitFlip& f : pattern.flips) EXPECT_NE(f.param, 1) << "conv1.bias is not selected";
  const std::string path = dir.file("pattern.txt");
  save_pattern(path, pattern);
  const BitPattern loaded = load_pattern(path, specs);
  EXPECT_EQ(loaded.seed, 1234u);
  EXPECT_EQ(loaded.model, model);
  ASSERT_EQ(loaded.params.size(), specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    EXPECT_EQ(loaded.params[i].name, specs[i].name);
    EXPECT_EQ(loaded.params[i].shape, specs[i].shape);
    EXPECT_EQ(loaded.params[i].bits, specs[i].bits);
  }
  EXPECT_TRUE(loaded.flips == pattern.flips);
  // Replaying the loaded file equals injecting with the same seed, model and selector.
  auto injected = tensors_for(specs, 50), replayed = tensors_for(specs, 50);
  const int64_t changed = inject_bit_errors(injected, model, 1234, ParamSelector("weight|^$"));
  EXPECT_EQ(apply_pattern(loaded, replayed), changed);
  for (size_t i = 0; i < specs.size(); ++i) EXPECT_TRUE(at::equal(injected[i].out, replayed[i].out)) << i;
  // The header is readable text.
  std::ifstream in(path);
  std::string first;
  std::getline(in, first);
  EXPECT_EQ(first, "bitrobust-bit-pattern 2");
  // The --layers expression is recorded, and flips outside what it selects are refused.
  EXPECT_EQ(loaded.layers, "weight|^$");
  std::string layers_line;
  for (int i = 0; i < 4; ++i) std::getline(in, layers_line);
  EXPECT_EQ(layers_line, "layers weight|^$");
  BitPattern widened = pattern;
  widened.flips.push_back({1, 0, 0, FlipKind::Flip});  // conv1.bias, which "weight|^$" does not select
  save_pattern(dir.file("widened.txt"), widened);
  EXPECT_ERROR_CONTAINS(load_pattern(dir.file("widened.txt")),
                        "a flip in parameter 1 (conv1.bias [16] 8 bits), which the header's layers 'weight|^$' do not select");
  EXPECT_EQ(draw_pattern(specs, model, 1234).layers, "");
  // Whether a file's flips are those its header draws: yes as saved, no once edited.
  EXPECT_TRUE(loaded.layers_recorded);
  EXPECT_TRUE(drawn_by_its_header(loaded));
  BitPattern reseeded = loaded;
  reseeded.seed = 1235;
  EXPECT_FALSE(drawn_by_its_header(reseeded));
  BitPattern fewer = loaded;
  fewer.flips.pop_back();
  EXPECT_FALSE(drawn_by_its_header(fewer));
  // A version 1 file (as the previous version wrote it: no layers line) of a pattern drawn with
  // --layers: the layers are unknown, and each parameter's flips are all of its draw or none.
  std::ifstream v2(path);
  std::string text((std::istreambuf_iterator<char>(v2)), std::istreambuf_iterator<char>());
  text.replace(0, std::string("bitrobust-bit-pattern 2").size(), "bitrobust-bit-pattern 1");
  const size_t layers_at = text.find("layers weight|^$\n");
  ASSERT_NE(layers_at, std::string::npos);
  text.erase(layers_at, std::string("layers weight|^$\n").size());
  std::ofstream(dir.file("v1.txt")) << text;
  const BitPattern v1 = load_pattern(dir.file("v1.txt"), specs);
  EXPECT_FALSE(v1.layers_recorded);
  EXPECT_TRUE(v1.flips == pattern.flips);
  EXPECT_TRUE(drawn_by_its_header(v1));
  BitPattern v1_fewer = v1;
  ASSERT_GT(v1_fewer.flips.size(), 1u);
  ASSERT_EQ(v1_fewer.flips[1].param, v1_fewer.flips[0].param);
  v1_fewer.flips.erase(v1_fewer.flips.begin());  // (the first parameter's draw, cut short)
  EXPECT_FALSE(drawn_by_its_header(v1_fewer));
}

TEST(BitPattern, FileThatDoesNotFitTheModelIsAnError) {
  TempDir dir;
  const auto specs = small_specs();
  const std::string path = dir.file("pattern.txt");
  save_pattern(path, draw_pattern(specs, ErrorModel::parse("random", 0.02), 9));
  auto other_shape = specs;
  other_shape[2].shape = {10, 63};
  EXPECT_ERROR_CONTAINS(load_pattern(path, other_shape),
                        "parameter 2 was fc.weight [10, 64] 12 bits when the pattern was made, the model has "
                        "fc.weight [10, 63] 12 bits");
  auto other_bits = specs;
  other_bits[0].bits = 4;
  EXPECT_ERROR_CONTAINS(load_pattern(path, other_bits), "parameter 0 was conv1.weight [16, 3, 3, 3] 8 bits");
  auto fewer = specs;
  fewer.pop_back();
  EXPECT_ERROR_CONTAINS(load_pattern(path, fewer), "made for 4 parameters, the model has 3");
  auto renamed = specs;
  renamed[1].name = "conv1.other";
  EXPECT_ERROR_CONTAINS(load_pattern(path, renamed), "parameter 1 was conv1.bias");
  // Replaying onto tensors of the wrong shape.
  const BitPattern pattern = load_pattern(path);
  auto tensors = tensors_for(other_shape, 1);
  EXPECT_ERROR_CONTAINS(apply_pattern(pattern, tensors), "parameter 2 was fc.weight [10, 64] 12 bits");
}

TEST(BitPattern, MalformedFilesAreErrorsWithLineNumbers) {
  TempDir dir;
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir.file(name)) << text;
    return dir.file(name);
  };
  const std::string header =
      "bitrobust-bit-pattern 2\nseed 5\nmodel random\nrate 0.01\nlayers\nchunk_elements 256\nparams 1\n0 w 4x4 8\n";
  EXPECT_ERROR_CONTAINS(load_pattern(dir.file("missing.txt")), "cannot read pattern file");
  EXPECT_ERROR_CONTAINS(load_pattern(write("a", "hello\n")), "not a bitrobust bit pattern file");
  EXPECT_ERROR_CONTAINS(load_pattern(write("b", header + "flips 2\n0 3 1 f\n")), "ends early (line 11)");
  EXPECT_ERROR_CONTAINS(load_pattern(write("c", header + "flips 1\n0 16 1 f\nend\n")),
                        "line 10: element 16 outside parameter 0");
  EXPECT_ERROR_CONTAINS(load_pattern(write("d", header + "flips 1\n0 3 8 f\nend\n")), "line 10: bit 8 outside the 8 bits");
  EXPECT_ERROR_CONTAINS(load_pattern(write("e", header + "flips 1\n0 3 1 x\nend\n")), "unknown flip kind 'x'");
  EXPECT_ERROR_CONTAINS(load_pattern(write("x1", header + "flips 1\n0 3 1 f 9\nend\n")), "unexpected '9' after the flip kind");
  EXPECT_ERROR_CONTAINS(load_pattern(write("x2", header + "flips 1\n0 3 1 f\nend\nflips 2\n")), "text after 'end'");
  EXPECT_ERROR_CONTAINS(load_pattern(write("x3", header + "flips 1\n0 3 1 f\nend now\n")), "unexpected 'now' after 'end'");
  EXPECT_ERROR_CONTAINS(load_pattern(write("f", header + "flips 1\n1 3 1 f\nend\n")), "parameter index 1 out of range");
  EXPECT_ERROR_CONTAINS(load_pattern(write("g", header + "flips 2\n0 3 1 f\n0 3 1 f\nend\n")),
                        "lists bit 1 of element 3 of parameter 0 twice");
  EXPECT_ERROR_CONTAINS(load_pattern(write("h", header + "flips 0\n")), "ends early");
  EXPECT_ERROR_CONTAINS(
      load_pattern(write("i", "bitrobust-bit-pattern 1\nseed 5\nmodel weird\nrate 0.01\n")), "unknown error model");
  EXPECT_ERROR_CONTAINS(load_pattern(write("j", "bitrobust-bit-pattern 3\n")), "unsupported version 3 (this build reads 1 and 2)");
  EXPECT_ERROR_CONTAINS(load_pattern(write("j2", "bitrobust-bit-pattern 1.9\n")), "line 1: unexpected '.9' after the version");
  EXPECT_ERROR_CONTAINS(load_pattern(write("j3", "bitrobust-bit-pattern 2 x\n")), "line 1: unexpected 'x' after the version");
  EXPECT_ERROR_CONTAINS(load_pattern(write("j4", "bitrobust-bit-pattern 2\nseed 5\nmodel random\nrate 0.01\nlayer fc\n")),
                        "line 5: expected 'layers' or 'layers <regex>'");
  EXPECT_ERROR_CONTAINS(load_pattern(write("j5", "bitrobust-bit-pattern 2\nseed 5\nmodel random\nrate 0.01\nlayers (\n")),
                        "line 5: ");
  // Version 1 (no layers line): read as drawn for every parameter.
  const BitPattern v1 = load_pattern(write("v1", "bitrobust-bit-pattern 1\nseed 5\nmodel random\nrate 0.01\n"
                                                 "chunk_elements 256\nparams 1\n0 w 4x4 8\nflips 1\n0 3 1 f\nend\n"));
  EXPECT_EQ(v1.layers, "");
  EXPECT_EQ(v1.flips.size(), 1u);
  // A CRLF file's layers line reads as the LF one's.
  EXPECT_EQ(load_pattern(write("crlf", "bitrobust-bit-pattern 2\r\nseed 5\r\nmodel random\r\nrate 0.01\r\nlayers w\r\n"
                                       "chunk_elements 256\r\nparams 1\r\n0 w 4x4 8\r\nflips 0\r\nend\r\n")).layers, "w");
  const std::string before_params = "bitrobust-bit-pattern 2\nseed 5\nmodel random\nrate 0.01\nlayers\nchunk_elements 256\nparams 1\n";
  EXPECT_ERROR_CONTAINS(load_pattern(write("p1", before_params + "0 w 4x4 8 extra\nflips 0\nend\n")),
                        "line 8: unexpected 'extra' after the bit width");
  EXPECT_ERROR_CONTAINS(load_pattern(write("p2", before_params + "0 w 99999999999x99999999999x5x5 8\nflips 0\nend\n")),
                        "line 8: shape '99999999999x99999999999x5x5' holds more than 2^62 elements");
  EXPECT_ERROR_CONTAINS(load_pattern(write("p2x", before_params + "0 w 16x 8\nflips 0\nend\n")), "line 8: bad shape '16x'");
  std::string zero_chunks = header;
  zero_chunks.replace(zero_chunks.find("chunk_elements 256"), 18, "chunk_elements 0");
  EXPECT_ERROR_CONTAINS(load_pattern(write("p3", zero_chunks + "flips 0\nend\n")), "line 6: chunk_elements must be positive");
  // A flip the header's model cannot make (msb: only bit 7 of 8-bit codes).
  std::string msb = header;
  msb.replace(msb.find("model random"), 12, "model msb");
  EXPECT_ERROR_CONTAINS(load_pattern(write("p4", msb + "flips 1\n0 3 1 f\nend\n")),
                        "line 10: bit 1 of parameter 0 is not one the header's error model msb reaches in 8-bit codes");
  EXPECT_EQ(load_pattern(write("p5", msb + "flips 1\n0 3 7 f\nend\n")).flips.size(), 1u);
  // An istream reads "-5" into the unsigned seed as 2^64 - 5.
  EXPECT_ERROR_CONTAINS(load_pattern(write("n", "bitrobust-bit-pattern 1\nseed -5\nmodel random\nrate 0.01\n")),
                        "line 2: seed must not be negative");
  // /dev/zero has no line end: read up to a bound, not into memory without end.
  EXPECT_ERROR_CONTAINS(load_pattern("/dev/zero"), "line 1: a NUL byte (not a bitrobust bit pattern file)");
  EXPECT_ERROR_CONTAINS(load_pattern(write("long", header + "flips 1\n0 3 1 f" + std::string(5000, ' ') + "\nend\n")),
                        "line 10: longer than 4096 bytes (not a bitrobust bit pattern file)");
  EXPECT_ERROR_CONTAINS(load_pattern(write("y", std::string(5000, 'y'))), "line 1: longer than 4096 bytes");
  const std::string folder = dir.file("folder");  // (removed with the files: std::remove takes empty folders)
  ASSERT_EQ(mkdir(folder.c_str(), 0700), 0);
  EXPECT_ERROR_CONTAINS(load_pattern(folder), "is a folder, not a pattern file");
  // A kind the header's model does not make: random errors flip, stuck-at sets one value, and an
  // asymmetric model flips or sets in the direction of its higher rate (found by a review: a set
  // to 0 in a "random" file was replayed and recorded as random errors).
  EXPECT_ERROR_CONTAINS(load_pattern(write("q1", header + "flips 1\n0 3 1 0\nend\n")),
                        "line 10: flip kind '0' is not one the header's error model random makes at rate 0.01");
  std::string stuck = header;
  stuck.replace(stuck.find("model random"), 12, "model stuck_at_1");
  EXPECT_ERROR_CONTAINS(load_pattern(write("q2", stuck + "flips 1\n0 3 1 f\nend\n")),
                        "flip kind 'f' is not one the header's error model stuck_at_1 makes");
  EXPECT_EQ(load_pattern(write("q3", stuck + "flips 1\n0 3 1 1\nend\n")).flips.size(), 1u);
  std::string asymmetric = header;
  asymmetric.replace(asymmetric.find("model random"), 12, "model random,0to1=0.1");
  EXPECT_ERROR_CONTAINS(load_pattern(write("q4", asymmetric + "flips 1\n0 3 1 0\nend\n")),
                        "flip kind '0' is not one the header's error model random,0to1=0.1 makes");
  // A hand-written valid file.
  const BitPattern ok = load_pattern(write("k", asymmetric + "flips 2\n0 15 7 1\n0 0 0 f\nend\n"));
  ASSERT_EQ(ok.flips.size(), 2u);
  EXPECT_EQ(ok.flips[0], (BitFlip{0, 0, 0, FlipKind::Flip}));
  EXPECT_EQ(ok.flips[1], (BitFlip{0, 15, 7, FlipKind::Set1}));
  EXPECT_ERROR_CONTAINS(save_pattern(dir.file("l"), BitPattern{1, ErrorModel(), {{"has space", {1}, 8}}, {}}),
                        "contains whitespace");
}

// A flip count far beyond what the file holds is "ends early", not a reservation of gigabytes: under
// an address-space limit 256 MiB above what the process uses, the old reservation (2^26 flips of 24
// bytes) failed with std::bad_alloc.
TEST(BitPattern, AHugeFlipCountInASmallFileIsEndsEarly) {
  TempDir dir;
  const std::string path = dir.file("huge");
  std::ofstream(path) << "bitrobust-bit-pattern 1\nseed 5\nmodel random\nrate 0.01\nchunk_elements 256\nparams 1\n"
                         "0 w 4x4 8\nflips 99999999999\n0 3 1 f\n";
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    long pages = 0;
    std::ifstream("/proc/self/statm") >> pages;
    const rlim_t used = static_cast<rlim_t>(pages) * static_cast<rlim_t>(::sysconf(_SC_PAGESIZE));
    struct rlimit limit {};
    if (pages <= 0 || ::getrlimit(RLIMIT_AS, &limit) != 0) ::_exit(3);
    limit.rlim_cur = std::min(used + (rlim_t{256} << 20), limit.rlim_max);  // the soft limit only
    if (::setrlimit(RLIMIT_AS, &limit) != 0) ::_exit(3);
    try {
      load_pattern(path);
    } catch (const Error& e) {
      ::_exit(std::string(e.what()).find("ends early") != std::string::npos ? 0 : 1);
    } catch (const std::bad_alloc&) {
      ::_exit(2);
    }
    ::_exit(4);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 3) GTEST_SKIP() << "no address-space limit could be set here";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: another error, 2: std::bad_alloc, 4: no error";
}

#ifdef BITROBUST_WITH_CUDA
TEST(BitPatternCuda, ApplyOnCudaEqualsCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (const char* name : {"random", "stuck_at_0", "stuck_at_1", "random,0to1=0.2,1to0=0.05"}) {
    const ErrorModel model = ErrorModel::parse(name, 0.1);
    for (int bits : {3, 8, 16}) {
      const at::Tensor clean = random_codes({4099}, bits, bits > 8 ? at::kShort : at::kByte, bits);
      const auto flips = draw_pattern(clean.numel(), bits, model, 3, 0);
      at::Tensor cpu_out = at::empty_like(clean);
      const int64_t cpu_changed = apply_pattern(flips, 0, clean, bits, cpu_out);
      const at::Tensor gpu_clean = clean.cuda();
      at::Tensor gpu_out = at::empty_like(gpu_clean);
      EXPECT_EQ(apply_pattern(flips, 0, gpu_clean, bits, gpu_out), cpu_changed) << name << " " << bits;
      EXPECT_TRUE(at::equal(gpu_out.cpu(), cpu_out)) << name << " " << bits;
    }
  }
}
#endif

}  // namespace
}  // namespace bitrobust::bits
