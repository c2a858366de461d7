#include "bitrobust/report/printable.h"

#include <nlohmann/json.hpp>

namespace bitrobust::report {

std::string valid_utf8(const std::string& raw) {
  return nlohmann::json::parse(nlohmann::json(raw).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace))
      .get<std::string>();
}

std::string printable(const std::string& raw) {
  const std::string s = valid_utf8(raw);
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const auto byte = static_cast<unsigned char>(s[i]);
    // C1: U+0080..U+009F, "\xC2\x80".."\xC2\x9F". Bidi: "\xE2\x80\xAA".."\xE2\x80\xAE" and
    // "\xE2\x81\xA6".."\xE2\x81\xA9". (s is valid UTF-8, so a lead byte has its continuations.)
    const bool c1 = byte == 0xC2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) <= 0x9F;
    const bool bidi = byte == 0xE2 && i + 2 < s.size() &&
                      ((s[i + 1] == '\x80' && static_cast<unsigned char>(s[i + 2]) >= 0xAA &&
                        static_cast<unsigned char>(s[i + 2]) <= 0xAE) ||
                       (s[i + 1] == '\x81' && static_cast<unsigned char>(s[i + 2]) >= 0xA6 &&
                        static_cast<unsigned char>(s[i + 2]) <= 0xA9));
    if (byte < 0x20 || byte == 0x7F || c1 || bidi) {
      out += "\xEF\xBF\xBD";
      i += c1 ? 1 : bidi ? 2 : 0;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace bitrobust::report
