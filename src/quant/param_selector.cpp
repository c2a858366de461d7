#include <regex>

#include "bitrobust/common/error.h"
#include "bitrobust/quant/quantizer.h"

namespace bitrobust::quant {

bool glob_match(const std::string& pattern, const std::string& text) {
  // Greedy matching with one backtrack point (the last '*'): linear for typical names.
  size_t p = 0, t = 0, star = std::string::npos, resume = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = t;
    } else if (star != std::string::npos) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

namespace {

bool pattern_matches(const std::string& pattern, const std::string& name) {
  if (pattern.rfind("re:", 0) != 0) return glob_match(pattern, name);
  try {
    return std::regex_search(name, std::regex(pattern.substr(3), std::regex::ECMAScript));
  } catch (const std::regex_error& e) {
    throw Error(detail::concat("invalid parameter pattern '", pattern, "': ", e.what()));
  }
}

}  // namespace

bool ParamSelector::selects(const std::string& name) const {
  bool included = include.empty();
  for (const std::string& pattern : include) {
    if (pattern_matches(pattern, name)) {
      included = true;
      break;
    }
  }
  if (!included) return false;
  for (const std::string& pattern : exclude) {
    if (pattern_matches(pattern, name)) return false;
  }
  return true;
}

void ParamSelector::validate() const {
  for (const auto* patterns : {&include, &exclude}) {
    for (const std::string& pattern : *patterns) pattern_matches(pattern, "");
  }
}

}  // namespace bitrobust::quant
