// libFuzzer harness: result files as `bitrobust compare` reads them (`eval --json`, format
// bitrobust-eval-1). The input holds one or two JSON documents separated by a NUL byte. Properties:
// a refusal is a bitrobust::Error; for results validate_sweep_json accepts, compare's tables and plot
// are made without any other exception. (eval's own table and CSV see only the JSON eval made.)
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bitrobust/report/eval_report.h"
#include "fuzz_util.h"

using namespace bitrobust;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* begin = reinterpret_cast<const char*>(data);
  const char* end = begin + size;
  std::vector<nlohmann::json> results;
  for (const char* p = begin; p <= end && results.size() < 2;) {
    const char* stop = std::find(p, end, '\0');
    nlohmann::json j = nlohmann::json::parse(p, stop, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return 0;  // the CLI names it as not valid JSON
    if (!fuzz::accepted([&] { report::validate_sweep_json(j, "result.json"); })) return 0;
    results.push_back(std::move(j));
    p = stop + 1;
  }
  fuzz::accepted([&] { report::compare_table(results); });
  for (size_t base = 0; base < results.size(); ++base) fuzz::accepted([&] { report::paired_table(results, base); });
  fuzz::accepted([&] { report::rerr_plot_svg(results, "fuzz"); });
  return 0;
}
