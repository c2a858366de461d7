#pragma once
// Helpers shared by tests: temporary folders and small synthetic data sets.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <ftw.h>
#include <unistd.h>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

#include "bitrobust/common/error.h"
#include "bitrobust/common/philox.h"
#include "bitrobust/data/dataset.h"

namespace bitrobust::test_util {

/// The message of the bitrobust::Error that fn throws ("" if none).
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

/// Random m-bit codes of the given dtype from a seeded CPU generator.
inline at::Tensor random_codes(at::IntArrayRef shape, int bits, at::ScalarType dtype, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return at::randint(0, int64_t{1} << bits, shape, gen, at::kLong).to(dtype);
}

/// Removes a folder tree with POSIX calls. (std::filesystem::remove_all crashed in a build against
/// the pip LibTorch, whose libtorch.so carries its own copy of that function.)
inline void remove_tree(const std::string& path) {
  nftw(path.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return std::remove(p); }, 16,
       FTW_DEPTH | FTW_PHYS);
}

/// A fresh temporary folder, removed when the object goes out of scope.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("bitrobust_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    remove_tree(path_.string());
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { remove_tree(path_.string()); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

/// A learnable synthetic set under the name "mnist" (for its normalization): class k images are
/// bright in the k-th horizontal band, plus seeded noise.
inline data::Dataset synthetic_dataset(int64_t n, int64_t classes = 4, int64_t hw = 8, uint64_t seed = 7) {
  data::Dataset d;
  d.images = at::empty({n, 1, hw, hw}, at::kByte);
  d.labels = at::empty({n}, at::kLong);
  PhiloxStream rng(seed, 99);
  auto* img = d.images.data_ptr<uint8_t>();
  auto* lab = d.labels.data_ptr<int64_t>();
  const int64_t band = hw / classes;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = rng.below(static_cast<uint32_t>(classes));
    lab[i] = k;
    for (int64_t y = 0; y < hw; ++y)
      for (int64_t x = 0; x < hw; ++x)
        img[(i * hw + y) * hw + x] =
            static_cast<uint8_t>(rng.below(96) + ((y / std::max<int64_t>(band, 1)) == k ? 150 : 0));
  }
  d.num_classes = classes;
  d.name = "mnist";
  d.split = "train";
  d.source = "synthetic";
  return d;
}

/// OpenBLAS's core before test_main's choose_openblas_core ("" where the BLAS is not OpenBLAS).
extern std::string openblas_core_at_load;

#ifdef BITROBUST_CLI_PATH
struct CliResult {
  int status;          ///< exit status, or 128 + signal
  std::string output;  ///< stdout and stderr together
};

/// Runs the bitrobust executable with `args` (shell syntax), after the shell commands `before`
/// (such as "ulimit -v 2000000;") if given.
inline CliResult run_cli(const std::string& args, const std::string& before = "") {
  const std::string command = before + std::string(BITROBUST_CLI_PATH) + " " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  std::string output;
  std::array<char, 4096> buf{};
  while (pipe && fgets(buf.data(), buf.size(), pipe)) output += buf.data();
  const int status = pipe ? pclose(pipe) : -1;
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), output};
}
#endif

}  // namespace bitrobust::test_util

/// Expects `statement` to throw a bitrobust::Error whose message contains `text`.
#define EXPECT_ERROR_CONTAINS(statement, text)                                                      \
  EXPECT_NE(::bitrobust::test_util::error_of([&] { statement; }).find(text), std::string::npos)    \
      << "message: '" << ::bitrobust::test_util::error_of([&] { statement; }) << "'"
