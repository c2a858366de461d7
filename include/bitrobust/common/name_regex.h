#pragma once
// NOTE [Name regexes]: users select parameters by regular expression (`--layers`, `--quant-include
// re:...`). std::regex backtracks: `(.*.*.*.*)*z` ran past any time limit on a 20-character
// parameter name (found by a review: `pattern --layers` hung). RE2 matches in time linear in the
// name whatever the pattern, and refuses instead the forms that need backtracking (backreferences,
// lookaround), which parameter names do not call for.
#include <memory>
#include <string>

namespace re2 {
class RE2;
}

namespace bitrobust {

class NameRegex {
 public:
  NameRegex() = default;
  /// Throws bitrobust::Error "<what>: invalid regular expression '<pattern>': <why>" if RE2 refuses
  /// the pattern, or if it is longer than 1000 characters.
  NameRegex(const std::string& pattern, const std::string& what);
  /// Whether the pattern matches anywhere in `name` (as std::regex_search; ^...$ for whole names).
  /// A default-constructed NameRegex matches every name.
  bool found_in(const std::string& name) const;

 private:
  std::shared_ptr<const re2::RE2> re_;  // (RE2 objects cannot be copied; compiled ones are immutable)
};

}  // namespace bitrobust
