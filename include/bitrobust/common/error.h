#pragma once
// User-facing errors: bad input (files, options, shapes, values). The CLI prints what() and exits 1.
// Broken internal invariants use TORCH_INTERNAL_ASSERT instead.
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace bitrobust {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}
}  // namespace detail

/// A JSON library message for users: nlohmann::json's what() without its leading tag
/// ("[json.exception.parse_error.101] parse error at line 2, ..." becomes "parse error at line 2, ...").
inline std::string json_error_text(const std::string& what) {
  const size_t end = what.find("] ");
  return what.rfind("[json.exception.", 0) == 0 && end != std::string::npos ? what.substr(end + 2) : what;
}

/// A LibTorch message for users: c10::Error's what_without_backtrace() without the location and
/// condition its CAFFE_ENFORCE checks put first ("[enforce fail at alloc_cpu.cpp:75] err == 0. "),
/// and the CPU allocator's failure ("DefaultCPUAllocator: can't allocate memory: you tried to
/// allocate N bytes", "not enough memory" since Torch 2) said as what it is for a user.
inline std::string torch_error_text(const std::string& what) {
  std::string text = what;
  if (text.rfind("[enforce fail at ", 0) == 0) {
    const size_t close = text.find("] ");
    const size_t sentence = close == std::string::npos ? close : text.find(". ", close);
    if (sentence != std::string::npos) text = text.substr(sentence + 2);
  }
  const std::string tried = "you tried to allocate ";
  const size_t at = text.find(tried);
  if (text.rfind("DefaultCPUAllocator: ", 0) == 0 && at != std::string::npos) {
    const unsigned long long bytes = std::strtoull(text.c_str() + at + tried.size(), nullptr, 10);
    char size[48];
    std::snprintf(size, sizeof size, "%llu bytes (%.1f GiB)", bytes, static_cast<double>(bytes) / (1 << 30));
    return "out of memory: one block of " + std::string(size) +
           " could not be allocated; this command needs more memory than the machine (or a limit such as "
           "`ulimit -v`) allows";
  }
  return text;
}

}  // namespace bitrobust

/// Throws bitrobust::Error with the concatenated message when cond is false.
#define BR_CHECK(cond, ...)                                              \
  do {                                                                   \
    if (!(cond)) throw ::bitrobust::Error(::bitrobust::detail::concat(__VA_ARGS__)); \
  } while (0)
