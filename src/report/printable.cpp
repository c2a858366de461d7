#include "bitrobust/report/printable.h"

#include <cstdio>

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

namespace {
// The length of the valid UTF-8 sequence at s[i] (RFC 3629: no overlong forms, no surrogates,
// nothing above U+10FFFF), or 0 if none starts there.
size_t utf8_sequence(const std::string& s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c == 0xE0) n = 3, lo = 0xA0;
  else if (c == 0xED) n = 3, hi = 0x9F;
  else if (c >= 0xE1 && c <= 0xEF) n = 3;
  else if (c == 0xF0) n = 4, lo = 0x90;
  else if (c == 0xF4) n = 4, hi = 0x8F;
  else if (c >= 0xF1 && c <= 0xF3) n = 4;
  else return 0;
  if (i + n > s.size() || b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k)
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  return n;
}
}  // namespace

std::string printable_message(const std::string& raw) {
  std::string text;
  text.reserve(raw.size());
  for (size_t i = 0; i < raw.size();) {
    const char c = raw[i];
    if (c == '\n' || c == '\r' || c == '\t') {
      text += ' ';
      ++i;
    } else if (const size_t n = utf8_sequence(raw, i); n > 0) {
      text.append(raw, i, n);
      i += n;
    } else {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02X", static_cast<unsigned char>(c));
      text += hex;
      ++i;
    }
  }
  return printable(text);
}

}  // namespace bitrobust::report
