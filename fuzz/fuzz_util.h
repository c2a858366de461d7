#pragma once
// Shared by the libFuzzer harnesses (fuzz/README.md): inputs reach the readers as files, as users'
// inputs do, and only bitrobust::Error is an acceptable way to refuse one.
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>
#include <vector>

#include "bitrobust/common/error.h"

namespace bitrobust::fuzz {

/// A file of this process's own in /dev/shm (or $TMPDIR), rewritten for every input.
inline std::string write_input_file(const uint8_t* data, size_t size, const char* suffix) {
  const char* dir = std::getenv("BITROBUST_FUZZ_DIR");
  const std::string path = std::string(dir ? dir : "/dev/shm") + "/bitrobust_fuzz_" +
                           std::to_string(::getpid()) + "_" + suffix;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) {
    std::fprintf(stderr, "fuzz harness: cannot write %s\n", path.c_str());
    std::abort();
  }
  return path;
}

/// A property the harness checks failed: report and stop, so libFuzzer saves the input.
[[noreturn]] inline void property_failed(const std::string& what) {
  std::fprintf(stderr, "property failed: %s\n", what.c_str());
  std::abort();
}

/// Runs f; a bitrobust::Error is a refusal (returns false), any other exception is a finding.
template <typename F>
bool accepted(F&& f) {
  try {
    f();
    return true;
  } catch (const bitrobust::Error&) {
    return false;
  } catch (const std::exception& e) {
    property_failed(std::string("an exception other than bitrobust::Error: ") + e.what());
  }
}

inline uint32_t le32(const uint8_t* p) { return p[0] | (p[1] << 8) | (p[2] << 16) | (uint32_t{p[3]} << 24); }
inline uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline void put_le32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

/// Rewrites the CRC-32 of every stored (method 0) record of a plain (not zip64) archive, in its local
/// header and in the central directory; false if the bytes are not such an archive.
inline bool fix_stored_checksums(std::vector<uint8_t>& z) {
  const size_t n = z.size();
  if (n < 22) return false;
  size_t eocd = n - 22;
  while (le32(&z[eocd]) != 0x06054b50) {
    if (eocd == 0 || n - eocd > 22 + 65535) return false;
    --eocd;
  }
  const uint32_t entries = le16(&z[eocd + 10]);
  size_t at = le32(&z[eocd + 16]);
  for (uint32_t i = 0; i < entries; ++i) {
    if (at > n || n - at < 46 || le32(&z[at]) != 0x02014b50) return false;
    const uint16_t method = le16(&z[at + 10]);
    const uint32_t csize = le32(&z[at + 20]);
    const size_t local = le32(&z[at + 42]);
    const size_t next = at + 46 + le16(&z[at + 28]) + le16(&z[at + 30]) + le16(&z[at + 32]);
    if (method == 0 && local <= n && n - local >= 30 && le32(&z[local]) == 0x04034b50) {
      const size_t start = local + 30 + le16(&z[local + 26]) + le16(&z[local + 28]);
      if (start <= n && csize <= n - start) {
        const uint32_t crc = static_cast<uint32_t>(::crc32(0L, z.data() + start, csize));
        put_le32(&z[at + 16], crc);
        put_le32(&z[local + 14], crc);
      }
    }
    at = next;
  }
  return true;
}

/// check(bytes, size) on the input as it is, and again with its stored records' checksums rewritten
/// to match their bytes, so that mutations inside records get past the checksums to the readers
/// behind them.
template <typename Check>
void as_is_and_with_checksums_fixed(const uint8_t* data, size_t size, Check&& check) {
  check(data, size);
  std::vector<uint8_t> fixed(data, data + size);
  if (fix_stored_checksums(fixed) && !std::equal(fixed.begin(), fixed.end(), data)) check(fixed.data(), size);
}

}  // namespace bitrobust::fuzz
