#include "bitrobust/common/name_regex.h"

#include <re2/re2.h>

#include "bitrobust/common/error.h"

namespace bitrobust {

NameRegex::NameRegex(const std::string& pattern, const std::string& what) {
  BR_CHECK(pattern.size() <= 1000, what, ": regular expression of ", pattern.size(),
           " characters; at most 1000 are accepted");
  RE2::Options options;
  options.set_log_errors(false);  // (its reason goes into our one error line instead)
  auto re = std::make_shared<const re2::RE2>(pattern, options);
  BR_CHECK(re->ok(), what, ": invalid regular expression '", pattern, "': ", re->error(),
           " (RE2 syntax: no backreferences or lookaround)");
  re_ = std::move(re);
}

bool NameRegex::found_in(const std::string& name) const { return !re_ || RE2::PartialMatch(name, *re_); }

}  // namespace bitrobust
