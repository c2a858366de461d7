#pragma once
#include "test_util.h"
// Test helpers: a temporary folder and writers for small IDX and CIFAR-10 files (raw or gzip).
#include <gtest/gtest.h>
#include <stdlib.h>
#include <zlib.h>

#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace bitrobust::testing {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

/// A fresh folder under the system temp folder, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "bitrobust-data-test-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() { bitrobust::test_util::remove_tree(path_.string()); }
  /// The path of `name` inside the folder (as a string).
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  std::string path() const { return path_.string(); }

 private:
  fs::path path_;
};

/// Writes bytes to path; gzip-compressed when the name ends in ".gz".
inline void write_file(const std::string& path, const Bytes& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  if (path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0) {
    gzFile out = gzopen(path.c_str(), "wb");
    ASSERT_NE(out, nullptr) << path;
    if (!bytes.empty()) ASSERT_EQ(gzwrite(out, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
    ASSERT_EQ(gzclose(out), Z_OK);
  } else {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(out.good()) << path;
  }
}

inline void append_u32_be(Bytes& bytes, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<uint8_t>(value >> shift));
}

/// An IDX image file: magic, [count, rows, cols], then the pixels.
inline Bytes idx_images(uint32_t count, uint32_t rows, uint32_t cols, const Bytes& pixels, uint32_t magic = 0x00000803) {
  Bytes bytes;
  append_u32_be(bytes, magic);
  append_u32_be(bytes, count);
  append_u32_be(bytes, rows);
  append_u32_be(bytes, cols);
  bytes.insert(bytes.end(), pixels.begin(), pixels.end());
  return bytes;
}

/// An IDX label file: magic, [count], then the labels.
inline Bytes idx_labels(const Bytes& labels, uint32_t magic = 0x00000801) {
  Bytes bytes;
  append_u32_be(bytes, magic);
  append_u32_be(bytes, static_cast<uint32_t>(labels.size()));
  bytes.insert(bytes.end(), labels.begin(), labels.end());
  return bytes;
}

/// Pixel i of a deterministic test pattern for example `example`.
inline uint8_t pattern_pixel(int64_t example, int64_t i) { return static_cast<uint8_t>((example * 37 + i * 11 + 5) % 256); }

inline Bytes pattern_pixels(int64_t count, int64_t per_example, int64_t first_example = 0) {
  Bytes pixels;
  for (int64_t e = 0; e < count; ++e)
    for (int64_t i = 0; i < per_example; ++i) pixels.push_back(pattern_pixel(first_example + e, i));
  return pixels;
}

/// CIFAR-10 records: label byte + 3072 pattern pixels each; example ids start at first_example.
inline Bytes cifar_records(const Bytes& labels, int64_t first_example = 0) {
  Bytes bytes;
  for (size_t r = 0; r < labels.size(); ++r) {
    bytes.push_back(labels[r]);
    for (int64_t i = 0; i < 3072; ++i) bytes.push_back(pattern_pixel(first_example + static_cast<int64_t>(r), i));
  }
  return bytes;
}

/// Asserts that `statement` throws bitrobust::Error whose message contains every one of `parts`.
/// BR_PRINT_ERRORS=1 in the environment prints each message (to review their wording).
#define EXPECT_ERROR_MENTIONS(statement, ...)                                                     \
  do {                                                                                            \
    try {                                                                                         \
      statement;                                                                                  \
      ADD_FAILURE() << "expected bitrobust::Error from " #statement;                             \
    } catch (const ::bitrobust::Error& error) {                                                   \
      const std::string message = error.what();                                                   \
      if (std::getenv("BR_PRINT_ERRORS")) std::cout << "  error: " << message << "\n";            \
      for (const std::string& part : std::vector<std::string>{__VA_ARGS__})                       \
        EXPECT_NE(message.find(part), std::string::npos) << "message: " << message << "\nmissing: " << part; \
    }                                                                                             \
  } while (0)

}  // namespace bitrobust::testing
