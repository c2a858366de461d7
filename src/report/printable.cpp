#include "bitrobust/report/printable.h"

#include <cstdio>

namespace bitrobust::report {

namespace {
// The UTF-8 sequence s[i] leads (RFC 3629: no overlong forms, no surrogates, nothing above
// U+10FFFF): the bytes it needs (0 for a byte that leads none) and how many of them are there and
// fit. Where they fall short, those bytes are Unicode's "maximal subpart": one U+FFFD stands for
// them, so a truncated character is one replacement and a stray byte another.
struct Sequence {
  size_t needed, present;
  bool valid() const { return needed > 0 && present == needed; }
};
Sequence sequence_at(const std::string& s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return {1, 1};
  const size_t n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
  if (n == 0) return {0, 1};
  // (the second byte's range is narrower after E0, ED, F0 and F4)
  const unsigned char lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80, hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
  size_t k = 1;
  for (; k < n && i + k < s.size(); ++k) {
    const auto next = static_cast<unsigned char>(s[i + k]);
    if (next < (k == 1 ? lo : 0x80) || next > (k == 1 ? hi : 0xBF)) break;
  }
  return {n, k};
}
}  // namespace

std::string valid_utf8(const std::string& raw) {
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size();) {
    const Sequence seq = sequence_at(raw, i);
    if (seq.valid()) {
      out.append(raw, i, seq.present);
    } else {
      out += "\xEF\xBF\xBD";
    }
    i += seq.present;
  }
  return out;
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


std::string printable_message(const std::string& raw) {
  std::string text;
  text.reserve(raw.size());
  for (size_t i = 0; i < raw.size();) {
    const char c = raw[i];
    if (c == '\n' || c == '\r' || c == '\t') {
      text += ' ';
      ++i;
    } else if (const Sequence seq = sequence_at(raw, i); seq.valid()) {
      text.append(raw, i, seq.present);
      i += seq.present;
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
