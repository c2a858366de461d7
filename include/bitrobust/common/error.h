#pragma once
// User-facing errors: bad input (files, options, shapes, values). The CLI prints what() and exits 1.
// Broken internal invariants use TORCH_INTERNAL_ASSERT instead.
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

}  // namespace bitrobust

/// Throws bitrobust::Error with the concatenated message when cond is false.
#define BR_CHECK(cond, ...)                                              \
  do {                                                                   \
    if (!(cond)) throw ::bitrobust::Error(::bitrobust::detail::concat(__VA_ARGS__)); \
  } while (0)
