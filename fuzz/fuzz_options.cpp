// libFuzzer harness: the option values users type (scheme strings, rate lists, error models,
// precisions, parameter patterns). The first byte picks the parser; the rest is the text.
// Properties: a refusal is a bitrobust::Error; what is accepted is valid, and its canonical form
// parses back to the same value; a regular expression (as --layers and --quant-include re:..., which
// share NameRegex) is compiled and matched in time linear in the name (libFuzzer's -timeout catches
// a slow one), and a glob likewise.
#include <cmath>
#include <cstdint>
#include <string>

#include "bitrobust/bits/bit_errors.h"
#include "bitrobust/eval/bit_error_eval.h"
#include "bitrobust/eval/precision.h"
#include "bitrobust/quant/quantizer.h"
#include "bitrobust/quant/scheme.h"
#include "fuzz_util.h"

using namespace bitrobust;

namespace {

void check_scheme(const std::string& text) {
  quant::QuantScheme scheme;
  if (!fuzz::accepted([&] { scheme = quant::QuantScheme::parse(text); })) return;
  // A parsed string may still be invalid (validate() is separate); a valid one round-trips.
  if (!fuzz::accepted([&] { scheme.validate(); })) return;
  const std::string canonical = scheme.to_string();
  quant::QuantScheme again;
  if (!fuzz::accepted([&] { again = quant::QuantScheme::parse(canonical); }))
    fuzz::property_failed("scheme '" + text + "' gives canonical '" + canonical + "', which does not parse");
  if (again != scheme || again.to_string() != canonical)
    fuzz::property_failed("scheme '" + text + "' -> '" + canonical + "' -> '" + again.to_string() + "'");
  if (scheme.bits < 2 || scheme.bits > 16) fuzz::property_failed("scheme '" + text + "' has bits out of range");
}

void check_rates(const std::string& text) {
  std::vector<double> rates;
  if (!fuzz::accepted([&] { rates = eval::parse_rates(text); })) return;
  for (double r : rates)
    if (!(r >= 0.0 && r <= 1.0)) fuzz::property_failed("rates '" + text + "' gave a rate outside [0, 1]");
}

void check_error_model(const std::string& text) {
  // The rate the model goes with comes from the text's last byte, so it also varies.
  const double rate = text.empty() ? 0.0 : static_cast<uint8_t>(text.back()) / 255.0;
  bits::ErrorModel model;
  if (!fuzz::accepted([&] { model = bits::ErrorModel::parse(text, rate); })) return;
  if (!fuzz::accepted([&] { model.validate(); }))
    fuzz::property_failed("error model '" + text + "' parsed but does not validate");
  const std::string canonical = model.name();
  bits::ErrorModel again;
  if (!fuzz::accepted([&] { again = bits::ErrorModel::parse(canonical, rate); }))
    fuzz::property_failed("error model '" + text + "' gives canonical '" + canonical + "', which does not parse");
  if (again.name() != canonical || again.kind != model.kind || again.lsb_bits != model.lsb_bits ||
      again.effective_rate_0to1() != model.effective_rate_0to1() ||
      again.effective_rate_1to0() != model.effective_rate_1to0())
    fuzz::property_failed("error model '" + text + "' -> '" + canonical + "' -> '" + again.name() + "'");
  for (double r : {model.effective_rate_0to1(), model.effective_rate_1to0()})
    if (!(r >= 0.0 && r <= 1.0)) fuzz::property_failed("error model '" + text + "' has a rate outside [0, 1]");
}

void check_precision(const std::string& text) {
  eval::Precision p;
  if (!fuzz::accepted([&] { p = eval::parse_precision(text); })) return;
  if (eval::parse_precision(eval::precision_name(p)) != p)
    fuzz::property_failed("precision '" + text + "' does not round-trip");
}

// "<pattern>\n<name>": the pattern as --layers and as --quant-include re:<pattern> and as a glob.
void check_selectors(const std::string& text) {
  const size_t cut = text.find('\n');
  const std::string pattern = text.substr(0, cut), name = cut == std::string::npos ? "" : text.substr(cut + 1);
  bool layers = false, quant_regex = false;
  const bool layers_ok = fuzz::accepted([&] { layers = bits::ParamSelector(pattern).selects(name); });
  const bool regex_ok = fuzz::accepted([&] { quant_regex = quant::ParamSelector{{"re:" + pattern}, {}}.selects(name); });
  if (!pattern.empty() && (layers_ok != regex_ok || layers != quant_regex))
    fuzz::property_failed("regex '" + pattern + "' selects '" + name + "' differently as --layers and as re:");
  fuzz::accepted([&] { quant::ParamSelector{{pattern}, {}}.selects(name); });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] >= 0xF0) {  // (the seeds' first bytes, '0' to '3', keep their parsers)
    check_selectors(text);
    return 0;
  }
  switch (data[0] % 4) {
    case 0: check_scheme(text); break;
    case 1: check_rates(text); break;
    case 2: check_error_model(text); break;
    default: check_precision(text); break;
  }
  return 0;
}
