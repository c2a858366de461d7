#include "bitrobust/common/error.h"
#include "bitrobust/common/name_regex.h"
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
  return NameRegex(pattern.substr(3), "parameter pattern '" + pattern + "'").found_in(name);
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

void ParamSelector::check_every_pattern_matches(const std::vector<std::string>& names) const {
  for (const auto& [patterns, flag] : {std::pair{&include, "--quant-include"}, std::pair{&exclude, "--quant-exclude"}}) {
    for (const std::string& pattern : *patterns) {
      bool any = false;
      for (const std::string& name : names) any = any || pattern_matches(pattern, name);
      if (any) continue;
      std::string listed;
      for (size_t i = 0; i < names.size() && i < 12; ++i) listed += (i ? ", " : "") + names[i];
      if (names.size() > 12) listed += ", ... (" + std::to_string(names.size()) + " in all)";
      throw Error(detail::concat(flag, " pattern '", pattern, "' matches no parameter of the model (parameters: ",
                                 listed, ")"));
    }
  }
}

void ParamSelector::validate() const {
  for (const auto* patterns : {&include, &exclude}) {
    for (const std::string& pattern : *patterns) pattern_matches(pattern, "");
  }
}

}  // namespace bitrobust::quant
