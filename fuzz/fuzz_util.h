#pragma once
// Shared by the libFuzzer harnesses (fuzz/README.md): inputs reach the readers as files, as users'
// inputs do, and only bitrobust::Error is an acceptable way to refuse one.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>

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

}  // namespace bitrobust::fuzz
