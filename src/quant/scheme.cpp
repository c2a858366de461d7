#include "bitrobust/quant/scheme.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <string_view>
#include <vector>

#include "bitrobust/common/error.h"
#include "bitrobust/quant/quantize_math.h"

namespace bitrobust::quant {

// NOTE [Scheme strings]: one string names a whole scheme, so results, model files and logs can say
// exactly how weights were quantized:
//   <s|u><bits>-<sym|asym>-<global<q>|tensor|channel>-<round|trunc>[-clip<w_max>]
// e.g. u8-asym-tensor-round-clip0.1, s4-sym-global1.0-trunc, u8-sym-channel-round. Parts come in
// this order, lowercase. Numbers are written in the shortest form that reads back to the same float
// ("1.0", "0.1", "1e-05"), so parse(to_string(s)) == s. The reference's presets are accepted as
// input too: normal<bits>[-clip<w_max>] and rquant<bits>[-clip<w_max>]; they are printed in full.

namespace {

constexpr const char* kGrammar =
    "expected <s|u><bits>-<sym|asym>-<global<q>|tensor|channel>-<round|trunc>[-clip<w_max>] with s = "
    "signed, u = unsigned, bits in 2..16, q and w_max positive numbers (e.g. "
    "u8-asym-tensor-round-clip0.1, s4-sym-global1.0-trunc, u8-sym-channel-round), or a preset "
    "normal<bits>[-clip<w_max>] or rquant<bits>[-clip<w_max>]";

[[noreturn]] void fail(const std::string& text, const std::string& what) {
  throw Error(detail::concat("invalid quantization scheme '", text, "': ", what, "; ", kGrammar));
}

/// Splits at '-', except a '-' that is an exponent's sign ("1e-05").
std::vector<std::string> split_parts(const std::string& text) {
  std::vector<std::string> parts(1);
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const bool exponent_sign = c == '-' && i >= 2 && (text[i - 1] == 'e' || text[i - 1] == 'E') &&
                               (std::isdigit(static_cast<unsigned char>(text[i - 2])) || text[i - 2] == '.');
    if (c == '-' && !exponent_sign) {
      parts.emplace_back();
    } else {
      parts.back() += c;
    }
  }
  return parts;
}

/// A part that begins like a number: after a bare "clip" or "global" it was a negative bound.
bool starts_numeric(const std::string& part) {
  return !part.empty() && (std::isdigit(static_cast<unsigned char>(part[0])) || part[0] == '.');
}

bool starts_with(const std::string& s, std::string_view prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

/// A finite float written in full ("0.1", "1e-05", no sign); false if `digits` is anything else.
bool parse_bound(const std::string& digits, float& value) {
  if (!starts_numeric(digits)) return false;
  const char* end = digits.data() + digits.size();
  const auto result = std::from_chars(digits.data(), end, value);
  return result.ec == std::errc() && result.ptr == end && std::isfinite(value);
}

/// The bits of "u8", "normal8": all decimal digits, no sign.
bool parse_bits(const std::string& digits, int& bits) {
  if (digits.empty() || digits.size() > 3) return false;
  for (const char c : digits) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  bits = std::stoi(digits);
  return true;
}

std::string format_bound(float value) {
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  std::string text(buffer, result.ptr);
  if (text.find_first_of(".e") == std::string::npos) text += ".0";
  return text;
}

void check_bits(int bits, const std::string& context) {
  BR_CHECK(bits >= 2 && bits <= 16, context, "quantization bits must be in 2..16, got ", bits);
}

/// Bounds must keep Δ = bound / (2^(m-1) - 1) a normal float for every width up to 16 bits (the
/// CPU flushes subnormals to zero and CUDA does not: a subnormal Δ would give other codes on each),
/// hence the lower limit.
bool valid_bound(float value) {
  return std::isfinite(value) && value >= kernels::kMinQuantBound && value <= kernels::kMaxQuantMagnitude;
}

}  // namespace

const char* to_string(RangeSource source) {
  switch (source) {
    case RangeSource::Global: return "global";
    case RangeSource::Tensor: return "tensor";
    case RangeSource::Channel: return "channel";
  }
  return "?";
}

std::string QuantScheme::to_string() const {
  std::string text = detail::concat(is_signed ? 's' : 'u', bits, '-', asymmetric ? "asym" : "sym", '-',
                                    quant::to_string(source));
  if (source == RangeSource::Global) text += format_bound(global_q);
  text += round ? "-round" : "-trunc";
  if (clip > 0.0f) text += "-clip" + format_bound(clip);
  return text;
}

QuantScheme QuantScheme::parse(const std::string& text) {
  if (text.empty()) fail(text, "the string is empty");
  const std::vector<std::string> parts = split_parts(text);
  for (size_t i = 0; i < parts.size(); ++i) {
    if (parts[i].empty()) fail(text, detail::concat("part ", i + 1, " is empty"));
  }

  auto parse_clip = [&](size_t index) {
    const std::string& part = parts[index];
    if (!starts_with(part, "clip")) {
      fail(text, detail::concat("part ", index + 1, " '", part, "' must be clip<w_max>"));
    }
    float clip = 0.0f;
    if (part == "clip" && index + 1 < parts.size() && starts_numeric(parts[index + 1])) {  // "clip-1"
      fail(text, detail::concat("the clip bound must be between 1e-30 and 1e30, got -", parts[index + 1]));
    }
    if (!parse_bound(part.substr(4), clip)) {
      fail(text, detail::concat("the clip bound '", part.substr(4), "' is not a finite float"));
    }
    if (!valid_bound(clip)) {
      fail(text, detail::concat("the clip bound must be between 1e-30 and 1e30, got ", part.substr(4)));
    }
    return clip;
  };
  auto check_no_more = [&](size_t used) {
    if (parts.size() > used) {
      fail(text, detail::concat("unexpected part ", used + 1, " '", parts[used], "' after the end"));
    }
  };

  // Presets: normal<bits>[-clip<w_max>], rquant<bits>[-clip<w_max>].
  for (const char* name : {"normal", "rquant"}) {
    if (!starts_with(parts[0], name)) continue;
    int bits = 0;
    const std::string digits = parts[0].substr(std::string_view(name).size());
    if (!parse_bits(digits, bits)) {
      fail(text, detail::concat("the preset's bit width '", digits, "' is not a number"));
    }
    if (bits < 2 || bits > 16) fail(text, detail::concat("bits must be in 2..16, got ", bits));
    float clip = 0.0f;
    if (parts.size() > 1) clip = parse_clip(1);
    check_no_more(2);
    return preset(name, bits, clip);
  }

  QuantScheme scheme;
  const std::string& type = parts[0];
  if (type[0] != 's' && type[0] != 'u') {
    fail(text, detail::concat("part 1 '", type, "' must be s<bits> (signed) or u<bits> (unsigned)"));
  }
  scheme.is_signed = type[0] == 's';
  if (!parse_bits(type.substr(1), scheme.bits)) {
    fail(text, detail::concat("the bit width '", type.substr(1), "' is not a number"));
  }
  if (scheme.bits < 2 || scheme.bits > 16) {
    fail(text, detail::concat("bits must be in 2..16, got ", scheme.bits));
  }

  if (parts.size() < 4) {
    static const char* const kMissing[] = {"", "symmetry (sym or asym)",
                                           "range source (global<q>, tensor or channel)",
                                           "rounding (round or trunc)"};
    fail(text, detail::concat("part ", parts.size() + 1, ", the ", kMissing[parts.size()],
                              ", is missing"));
  }

  if (parts[1] == "sym" || parts[1] == "asym") {
    scheme.asymmetric = parts[1] == "asym";
  } else {
    fail(text, detail::concat("part 2 '", parts[1], "' must be sym or asym"));
  }

  const std::string& source = parts[2];
  if (source == "tensor") {
    scheme.source = RangeSource::Tensor;
  } else if (source == "channel") {
    scheme.source = RangeSource::Channel;
  } else if (starts_with(source, "global")) {
    scheme.source = RangeSource::Global;
    if (source == "global" && starts_numeric(parts[3])) {  // "global-1": split at the sign
      fail(text, detail::concat("the global bound must be between 1e-30 and 1e30, got -", parts[3]));
    }
    if (!parse_bound(source.substr(6), scheme.global_q)) {
      fail(text, detail::concat("the global bound '", source.substr(6),
                                "' is not a finite float (write global<q>, e.g. global1.0)"));
    }
    if (!valid_bound(scheme.global_q)) {
      fail(text, detail::concat("the global bound must be between 1e-30 and 1e30, got ", source.substr(6)));
    }
  } else {
    fail(text, detail::concat("part 3 '", source, "' must be global<q>, tensor or channel"));
  }

  if (parts[3] == "round" || parts[3] == "trunc") {
    scheme.round = parts[3] == "round";
  } else {
    fail(text, detail::concat("part 4 '", parts[3], "' must be round or trunc"));
  }

  if (parts.size() > 4) scheme.clip = parse_clip(4);
  check_no_more(5);
  return scheme;
}

QuantScheme QuantScheme::preset(const std::string& name, int bits, float clip) {
  check_bits(bits, detail::concat("preset '", name, "': "));
  BR_CHECK(clip == 0.0f || valid_bound(clip), "preset '", name,
           "': the clip bound must be between 1e-30 and 1e30 (or 0 for none), got ", clip);
  QuantScheme scheme;
  scheme.bits = bits;
  scheme.clip = clip;
  scheme.is_signed = false;
  if (name == "normal") {
    scheme.asymmetric = false;
    scheme.source = RangeSource::Global;
    scheme.global_q = clip > 0.0f ? clip : 1.0f;
    scheme.round = false;
  } else if (name == "rquant") {
    scheme.asymmetric = true;
    scheme.source = RangeSource::Tensor;
    scheme.round = true;
  } else {
    throw Error(detail::concat("unknown quantization preset '", name,
                               "'; known presets: normal, rquant"));
  }
  return scheme;
}

void QuantScheme::validate() const {
  check_bits(bits, "");
  BR_CHECK(clip == 0.0f || valid_bound(clip),
           "the clip bound must be between 1e-30 and 1e30 (0 = no clipping), got ", clip);
  BR_CHECK(source != RangeSource::Global || valid_bound(global_q),
           "the global quantization bound must be between 1e-30 and 1e30, got ", global_q);
}

kernels::QuantFormat QuantScheme::format() const {
  kernels::QuantFormat f;
  f.bits = bits;
  f.is_signed = is_signed;
  f.asymmetric = asymmetric;
  f.round = round;
  // See NOTE [Where epsilon goes] in bitrobust/quant/quantize_math.h.
  f.step_eps = (asymmetric || source == RangeSource::Global) ? kernels::kQuantEps : 0.0f;
  return f;
}

bool QuantScheme::operator==(const QuantScheme& other) const {
  return bits == other.bits && is_signed == other.is_signed && asymmetric == other.asymmetric &&
         source == other.source && clip == other.clip && round == other.round &&
         (source != RangeSource::Global || global_q == other.global_q);
}

}  // namespace bitrobust::quant
