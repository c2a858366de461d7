#include "bitrobust/report/eval_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>
#include <utility>
#include <vector>


#include "bitrobust/bits/bit_errors.h"
#include "bitrobust/common/error.h"
#include "bitrobust/common/fingerprint.h"
#include "bitrobust/io/model_file.h"
#include "bitrobust/quant/scheme.h"
#include "bitrobust/report/printable.h"

namespace bitrobust::report {

namespace {
std::string pct(double v, int digits = 2) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, 100 * v);
  return buf;
}
std::string rate_text(double r) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g%%", 100 * r);
  return buf;
}
// Whether sweep j's rate 0 had bit errors (ErrorModel::has_errors: "random,0to1=0.02"); without,
// it is the clean model, shown as the clean row. (A name this version does not know: no errors.)
bool zero_rate_has_errors(const nlohmann::json& j) {
  try {
    return bits::ErrorModel::parse(j["error_model"].get<std::string>(), 0.0).has_errors();
  } catch (const Error&) {
    return false;
  }
}
// Characters a terminal shows for UTF-8 text ("±" is two bytes, one character).
size_t display_width(const std::string& s) {
  return static_cast<size_t>(std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}
// Text for an SVG: XML takes neither bytes that are not UTF-8 nor control characters; both become
// U+FFFD, so the plot always parses.
std::string xml_escape(const std::string& raw) {
  const std::string s = valid_utf8(raw);
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    // U+FFFE and U+FFFF are valid UTF-8 but not XML characters.
    if (s.compare(i, 3, "\xEF\xBF\xBE") == 0 || s.compare(i, 3, "\xEF\xBF\xBF") == 0) {
      out += "\xEF\xBF\xBD";
      i += 2;
      continue;
    }
    if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n' && c != '\r') out += "\xEF\xBF\xBD";
    else if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else if (c == '"') out += "&quot;";
    else out += c;
  }
  return out;
}
// A result's name as tables print it: a name from a file or the command line may hold control
// characters and bytes that are not UTF-8 (found by a review); printable() keeps the table's lines
// and order and the terminal's state.
std::string shown_name(const nlohmann::json& result) {
  return printable(result.value("model_name", std::string("model")));
}
// The names of results shown side by side: a name two results share (one model evaluated twice,
// with other --layers or --limit) gets the result's position, as --paired-with counts, so that
// no two columns or legend entries read alike. A name given as "m #2" can meet the suffixed
// "m" of another result; such names take their position again until all differ.
std::vector<std::string> shown_names(const std::vector<nlohmann::json>& results, bool for_svg = false) {
  std::vector<std::string> names, raw;  // printable (decides what reads alike), and as the SVG escapes it
  for (const auto& j : results) {
    names.push_back(shown_name(j));
    raw.push_back(j.value("model_name", std::string("model")));
  }
  // Each round suffixes a distinct position to every name still shared, so at most one round per
  // result is needed.
  for (size_t round = 0; round <= results.size(); ++round) {
    std::map<std::string, int> count;
    for (const std::string& name : names) ++count[name];
    bool shared_any = false;
    for (size_t i = 0; i < results.size(); ++i) {
      if (count[names[i]] < 2) continue;
      shared_any = true;
      names[i] += " #" + std::to_string(i + 1);
      raw[i] += " #" + std::to_string(i + 1);
    }
    if (!shared_any) break;
  }
  return for_svg ? raw : names;
}
}  // namespace

std::string layout_of(const std::vector<std::vector<int64_t>>& shapes, const std::vector<int>& bits) {
  BR_CHECK(shapes.size() == bits.size(), "layout_of: ", shapes.size(), " shapes but ", bits.size(), " bit widths");
  std::string text;
  int64_t total = 0;
  for (size_t i = 0; i < shapes.size(); ++i) {
    int64_t numel = 1;
    for (int64_t d : shapes[i]) {
      text += std::to_string(d) + "x";
      numel *= d;
    }
    text += ":" + std::to_string(bits[i]) + ";";
    total += numel * bits[i];
  }
  return detail::concat(shapes.size(), " tensors, ", total, " bits, ", Crc32().add(text.data(), text.size()).text());
}

nlohmann::json sweep_to_json(const eval::SweepResult& sweep, const eval::SweepOptions& options, const SweepContext& ctx) {
  nlohmann::json results = nlohmann::json::array();
  std::vector<double> rates;
  for (const auto& r : sweep.results) {
    rates.push_back(r.rate);
    results.push_back({{"rate", r.rate},
                       {"rerr_mean", r.rerr_mean},
                       {"rerr_std", r.rerr_std},
                       {"rerr_min", r.rerr_min},
                       {"rerr_max", r.rerr_max},
                       // one pattern has no spread to build an interval from: null, not [mean, mean]
                       {"rerr_ci95", r.rerr.size() > 1 ? nlohmann::json{r.rerr_ci95_low, r.rerr_ci95_high}
                                                       : nlohmann::json(nullptr)},
                       {"perturbed_error_mean", r.perturbed_error_mean},
                       {"per_pattern", r.rerr},
                       {"perturbed_per_pattern", r.perturbed_error},
                       {"bits_changed", r.bits_changed}});
  }
  return {{"format", "bitrobust-eval-1"},
          {"model", ctx.model},
          {"model_name", ctx.model_name},
          {"model_fingerprint", ctx.model_fingerprint.empty() ? nlohmann::json() : nlohmann::json(ctx.model_fingerprint)},
          {"model_seed", ctx.model_seed},
          {"scheme", ctx.scheme},
          {"error_model", ctx.error_model},
          {"layers", ctx.layers},
          {"layout", ctx.layout.empty() ? nlohmann::json() : nlohmann::json(ctx.layout)},
          {"data", ctx.data.empty() ? nlohmann::json() : nlohmann::json(ctx.data)},
          {"seed", options.seed},
          {"patterns", options.patterns},
          {"rates", rates},
          {"dataset", ctx.dataset},
          {"split", ctx.split},
          {"cifar_protocol", ctx.cifar_protocol},
          {"limit", ctx.limit},
          {"examples", sweep.examples},
          {"batch", ctx.batch},
          {"device", ctx.device},
          {"precision", ctx.precision},
          {"activations", ctx.activations},
          {"versions", io::version_info()},
          {"clean_error", sweep.clean_error},
          // (null, not 0, when no pattern changed a bit: nothing was timed, as train's figures)
          {"timings", {{"seconds", sweep.seconds},
                       {"images_patterns_per_second", sweep.perturbed_passes == 0
                                                          ? nlohmann::json(nullptr)
                                                          : nlohmann::json(sweep.images_patterns_per_second)}}},
          {"results", results}};
}

void validate_sweep_json(const nlohmann::json& j, const std::string& source) {
  auto fail = [&](const std::string& what) { throw Error("result file " + source + ": " + what); };
  if (!j.is_object()) fail("not a JSON object");
  if (j.contains("format") && j["format"] == "bitrobust-replay-1") {
    fail("is the result of one replayed pattern (eval --replay), not a sweep over rates; compare takes the JSON of "
         "`bitrobust eval --json` without --replay");
  }
  if (!j.contains("format") || j["format"] != "bitrobust-eval-1") {
    fail("not a bitrobust eval result of format bitrobust-eval-1 (format: " +
         (j.contains("format") ? j["format"].dump() : std::string("missing")) + ")");
  }
  for (const char* key : {"clean_error", "scheme", "error_model", "seed", "patterns", "results"}) {
    if (!j.contains(key)) fail(std::string("missing key '") + key + "'");
  }
  auto fraction = [&](const nlohmann::json& v, const std::string& name) {
    if (!v.is_number() || v.get<double>() < 0 || v.get<double>() > 1) fail(name + " is not a fraction in [0, 1]");
  };
  fraction(j["clean_error"], "clean_error");
  if (!j["scheme"].is_string() || !j["error_model"].is_string()) fail("scheme and error_model must be strings");
  if (!j["patterns"].is_number_integer() || j["patterns"].get<int64_t>() < 1) fail("patterns must be a positive integer");
  // (pattern seeds are unsigned 64-bit: nlohmann reads those above 2^63 as unsigned integers)
  if (!j["seed"].is_number_integer() || (j["seed"].is_number_integer() && !j["seed"].is_number_unsigned() &&
                                          j["seed"].get<int64_t>() < 0)) {
    fail("seed must be an integer >= 0");
  }
  if (j.contains("model_name") && !j["model_name"].is_string()) fail("model_name must be a string");
  // (compare pairs results by it: two files edited to the same non-text value would pair)
  if (j.contains("layout") && !j["layout"].is_null() && !j["layout"].is_string()) fail("layout must be a string");
  // (absent from results written before 2026-12-06, all NCHW)
  if (j.contains("activations") && (!j["activations"].is_string() || (j["activations"] != "nchw" &&
                                                                       j["activations"] != "channels_last"))) {
    fail("activations must be \"nchw\" or \"channels_last\"");
  }
  // (absent from results written before they were recorded)
  if (j.contains("model_fingerprint") && !j["model_fingerprint"].is_null() && !j["model_fingerprint"].is_string()) {
    fail("model_fingerprint must be a string");
  }
  if (j.contains("model_seed") && !j["model_seed"].is_null() && !j["model_seed"].is_number_unsigned()) {
    fail("model_seed must be a non-negative integer");
  }
  if (j.contains("data") && !j["data"].is_null() && !j["data"].is_string()) fail("data must be a string");
  // Every error is a count of misclassified images over `examples` (found by a review: a file edited
  // to 7 examples, with errors no count of 7 gives, was compared as if it were a result).
  int64_t examples = 0;
  if (j.contains("examples")) {
    if (!j["examples"].is_number_integer() || j["examples"].get<int64_t>() < 1) fail("examples must be a positive integer");
    examples = j["examples"].get<int64_t>();
  }
  auto count_of_examples = [&](const nlohmann::json& v, const std::string& name) {
    if (examples == 0) return;
    const double count = v.get<double>() * static_cast<double>(examples);
    if (std::abs(count - std::round(count)) > 1e-6) {
      const std::string n = std::to_string(examples);
      fail(name + " " + v.dump() + " is not k/" + n + " for a whole number k (a count of the " + n + " examples)");
    }
  };
  count_of_examples(j["clean_error"], "clean_error");
  if (!j["results"].is_array() || j["results"].empty()) fail("results must be a non-empty list");
  for (const auto& r : j["results"]) {
    for (const char* key : {"rate", "rerr_mean", "rerr_std", "rerr_min", "rerr_max", "perturbed_error_mean", "per_pattern"}) {
      if (!r.contains(key)) fail(std::string("a results entry lacks '") + key + "'");
    }
    fraction(r["rate"], "rate");
    for (const char* key : {"rerr_mean", "rerr_min", "rerr_max", "perturbed_error_mean"}) fraction(r[key], key);
    if (!r["per_pattern"].is_array() || r["per_pattern"].size() != j["patterns"].get<size_t>())
      fail("per_pattern must hold one value per pattern");
    double sum = 0;
    for (const auto& v : r["per_pattern"]) {
      fraction(v, "per_pattern value");
      count_of_examples(v, "per_pattern value");
      sum += v.get<double>();
    }
    // The paired comparison reads per_pattern, the tables the summary: they must be one result.
    if (std::abs(sum / static_cast<double>(r["per_pattern"].size()) - r["rerr_mean"].get<double>()) > 1e-6) {
      fail("rerr_mean " + r["rerr_mean"].dump() + " is not the mean of per_pattern at rate " + r["rate"].dump());
    }
    // (values in [0, 1] have a sample standard deviation below 1)
    if (!r["rerr_std"].is_number() || !(r["rerr_std"].get<double>() >= 0 && r["rerr_std"].get<double>() <= 1)) {
      fail("rerr_std must be a number in [0, 1]");
    }
    // The spread shown beside the mean must be the per-pattern values' own (a review edited rerr_std
    // to 0.9 and compare showed "10.00 ±90.00" for identical patterns).
    eval::RateResult summary;
    for (const auto& v : r["per_pattern"]) summary.rerr.push_back(v.get<double>());
    summary.perturbed_error = summary.rerr;
    eval::summarize(summary);
    for (const auto& [key, value] : {std::pair<const char*, double>{"rerr_std", summary.rerr_std},
                                     {"rerr_min", summary.rerr_min},
                                     {"rerr_max", summary.rerr_max}}) {
      if (std::abs(r[key].get<double>() - value) > 1e-6) {
        fail(std::string(key) + " " + r[key].dump() + " is not that of per_pattern at rate " + r["rate"].dump());
      }
    }
    // RErr counts the images the clean OR the perturbed model gets wrong, so no pattern's RErr is
    // below the clean error or its own perturbed error (compare would otherwise show a model
    // "improved" by bit errors). (Slack: clean and perturbed errors are counts over one set.)
    const double clean_error = j["clean_error"].get<double>();
    for (const auto& v : r["per_pattern"]) {
      if (v.get<double>() < clean_error - 1e-9) {
        fail("an RErr " + v.dump() + " at rate " + r["rate"].dump() + " is below the clean error " +
             j["clean_error"].dump() + " (RErr counts the clean model's errors too)");
      }
    }
    if (r.contains("perturbed_per_pattern")) {  // (absent in results written before it was kept)
      const auto& pert = r["perturbed_per_pattern"];
      if (!pert.is_array() || pert.size() != r["per_pattern"].size())
        fail("perturbed_per_pattern must hold one value per pattern at rate " + r["rate"].dump());
      for (size_t i = 0; i < pert.size(); ++i) {
        fraction(pert[i], "perturbed_per_pattern value");
        if (r["per_pattern"][i].get<double>() < pert[i].get<double>() - 1e-9) {
          fail("pattern " + std::to_string(i) + "'s RErr " + r["per_pattern"][i].dump() + " at rate " +
               r["rate"].dump() + " is below its perturbed error " + pert[i].dump());
        }
      }
    }
    if (r.contains("bits_changed")) {
      bool counts = r["bits_changed"].is_array() && r["bits_changed"].size() == r["per_pattern"].size();
      for (const auto& v : r["bits_changed"]) counts = counts && v.is_number_integer() && v.get<int64_t>() >= 0;
      if (!counts) fail("bits_changed must hold one count >= 0 per pattern at rate " + r["rate"].dump());
    }
    // (with a rounding step's slack: files written before the mean was kept within its range)
    const double slack = 1e-12;
    if (!(r["rerr_min"].get<double>() - slack <= r["rerr_mean"].get<double>() &&
          r["rerr_mean"].get<double>() <= r["rerr_max"].get<double>() + slack)) {
      fail("rerr_min <= rerr_mean <= rerr_max does not hold at rate " + r["rate"].dump());
    }
    for (const auto& earlier : j["results"]) {
      if (&earlier == &r) break;
      if (earlier["rate"] == r["rate"]) fail("rate " + r["rate"].dump() + " appears twice in results");
    }
  }
  if (j.contains("rates")) {
    nlohmann::json listed = nlohmann::json::array();
    for (const auto& r : j["results"]) listed.push_back(r["rate"]);
    if (j["rates"] != listed) fail("the rates list " + j["rates"].dump() + " disagrees with the results " + listed.dump());
  }
}

std::string sweep_csv(const nlohmann::json& j) {
  std::ostringstream out;
  out << "rate,pattern,seed,rerr,perturbed_error\n";
  const uint64_t seed = j["seed"].get<uint64_t>();
  // Numbers as the JSON writes them (shortest form that reads back exactly), so both files agree.
  for (const auto& r : j["results"]) {
    const auto& rerr = r["per_pattern"];
    const auto& pert = r["perturbed_per_pattern"];
    for (size_t i = 0; i < rerr.size(); ++i) {
      out << r["rate"].dump() << ',' << i << ',' << seed + i << ',' << rerr[i].dump() << ','
          << pert[i].dump() << '\n';
    }
  }
  return out.str();
}

std::string sweep_table(const nlohmann::json& j) {
  std::ostringstream out;
  char line[160];
  // (a stream, not the fixed line: model names and error models have no length limit)
  out << shown_name(j) << "  scheme " << printable(j["scheme"].get<std::string>()) << "  errors "
      << printable(j["error_model"].get<std::string>()) << "  " << j["patterns"].get<int64_t>()
      << (j["patterns"].get<int64_t>() == 1 ? " pattern" : " patterns") << " from seed " << j["seed"].get<uint64_t>();
  // (what makes the sweep other than a whole-model one at full precision; absent in older results)
  if (j.contains("layers") && j["layers"].is_string() && !j["layers"].get<std::string>().empty())
    out << "  layers '" << printable(j["layers"].get<std::string>()) << "'";
  if (j.contains("precision") && j["precision"].is_string() && j["precision"] != "fp32")
    out << "  precision " << printable(j["precision"].get<std::string>());
  out << '\n';
  out << "  rate        RErr mean   std     min     max    (%)\n";
  // The clean error is the p = 0 row, unless rate 0 had errors in one direction: then it has a row of its own.
  const bool zero_has_errors = zero_rate_has_errors(j);
  std::snprintf(line, sizeof line, "  %-10s  %7s  %6s  %6s  %6s   clean error\n", zero_has_errors ? "clean" : "0",
                pct(j["clean_error"]).c_str(), "-", "-", "-");
  out << line;
  // One pattern has no spread: its standard deviation is undefined (written as 0 in the JSON).
  const bool one_pattern = j["patterns"].get<int64_t>() == 1;
  for (const auto& r : j["results"]) {
    if (r["rate"].get<double>() == 0 && !zero_has_errors) continue;
    std::snprintf(line, sizeof line, "  %-10s  %7s  %6s  %6s  %6s\n", rate_text(r["rate"]).c_str(),
                  pct(r["rerr_mean"]).c_str(), one_pattern ? "-" : pct(r["rerr_std"]).c_str(), pct(r["rerr_min"]).c_str(),
                  pct(r["rerr_max"]).c_str());
    out << line;
  }
  return out.str();
}

std::string compare_table(const std::vector<nlohmann::json>& results) {
  std::set<double> rates;
  for (const auto& j : results)
    for (const auto& r : j["results"]) rates.insert(r["rate"].get<double>());
  // A column is as wide as its model's name (at least 22 characters), so no name is cut.
  const std::vector<std::string> names = shown_names(results);
  std::vector<size_t> widths;
  for (const std::string& name : names) widths.push_back(std::max<size_t>(22, display_width(name)));
  const auto right = [](const std::string& text, size_t width) {
    const size_t shown = display_width(text);
    return "  " + std::string(width > shown ? width - shown : 0, ' ') + text;
  };
  std::ostringstream out;
  char cell[64];
  out << "mean RErr in % (clean error in the first row)\n";
  std::snprintf(cell, sizeof cell, "%-10s", "rate");
  out << cell;
  for (size_t i = 0; i < results.size(); ++i) out << right(names[i], widths[i]);
  out << '\n';
  std::snprintf(cell, sizeof cell, "%-10s", "clean");
  out << cell;
  for (size_t i = 0; i < results.size(); ++i) out << right(pct(results[i]["clean_error"]), widths[i]);
  out << '\n';
  for (double rate : rates) {
    if (rate == 0 && std::none_of(results.begin(), results.end(), zero_rate_has_errors)) continue;  // the clean row
    std::snprintf(cell, sizeof cell, "%-10s", rate_text(rate).c_str());
    out << cell;
    for (size_t i = 0; i < results.size(); ++i) {
      const auto& j = results[i];
      std::string v = "-";
      for (const auto& r : j["results"])
        if (r["rate"].get<double>() == rate)
          v = pct(r["rerr_mean"]) + (j["patterns"].get<int64_t>() == 1 ? " (1 pattern)" : " ±" + pct(r["rerr_std"]));
      out << right(v, widths[i]);
    }
    out << '\n';
  }
  return out.str();
}

namespace {
// Why sweeps a and b did not meet the same bit errors on the same images ("" if they did).
std::string unpaired_reason(const nlohmann::json& a, const nlohmann::json& b) {
  // (not "limit": the first N images of the same set are pinned by "examples", whatever limit said)
  for (const char* key : {"seed", "patterns", "error_model", "layers", "dataset", "split", "cifar_protocol",
                          "examples"}) {
    const nlohmann::json va = a.value(key, nlohmann::json()), vb = b.value(key, nlohmann::json());
    if (va != vb) return detail::concat(key, " ", va.dump(), " against ", vb.dump());
  }
  // Files since 2026-12-05 record the quantized parameters' shapes and widths, which decide where
  // a seed's bits fall, for every error model.
  // Files since 2026-12-05 also fingerprint the images: two data roots may hold different images
  // under the same names and counts.
  const nlohmann::json da = a.value("data", nlohmann::json()), db = b.value("data", nlohmann::json());
  if (da.is_string() && db.is_string() && da != db) {
    return "other images (data " + da.dump() + " against " + db.dump() + ")";
  }
  const nlohmann::json la = a.value("layout", nlohmann::json()), lb = b.value("layout", nlohmann::json());
  if (la.is_string() && lb.is_string() && la != lb) {
    return "other parameter shapes or bit widths (layout " + la.dump() + " against " + lb.dump() + ")";
  }
  // The same seeds select the same bits only in parameters of the same shapes and bit widths. The
  // widths are in the schemes; error models that change every selected bit also record the layout:
  // their counts of changed bits must agree.
  try {
    const int bits_a = quant::QuantScheme::parse(a["scheme"].get<std::string>()).bits;
    const int bits_b = quant::QuantScheme::parse(b["scheme"].get<std::string>()).bits;
    if (bits_a != bits_b) return detail::concat(bits_a, "-bit codes against ", bits_b, "-bit codes");
  } catch (const Error&) {
    return "a scheme this version does not know";
  }
  bits::ErrorModel model;
  try {
    model = bits::ErrorModel::parse(a["error_model"].get<std::string>(), 0.0);
  } catch (const Error&) {
    return "an error model this version does not know";
  }
  const bool flips_every_selected = model.kind != bits::ErrorKind::StuckAt0 && model.kind != bits::ErrorKind::StuckAt1 &&
                                    model.rate_0to1 < 0 && model.rate_1to0 < 0;
  if (!flips_every_selected) return "";
  for (const auto& ra : a["results"]) {
    for (const auto& rb : b["results"]) {
      if (ra["rate"] == rb["rate"] && ra.contains("bits_changed") && rb.contains("bits_changed") &&
          ra["bits_changed"] != rb["bits_changed"]) {
        return "their patterns changed other numbers of bits: other parameter shapes or bit widths";
      }
    }
  }
  return "";
}
}  // namespace

std::string paired_table(const std::vector<nlohmann::json>& results, size_t base_index) {
  if (results.size() < 2) return "";
  BR_CHECK(base_index < results.size(), "paired_table: no result ", base_index + 1, " among ", results.size());
  const nlohmann::json& base = results[base_index];
  std::ostringstream out;
  char line[200];
  const std::vector<std::string> names = shown_names(results);
  out << "paired with " << names[base_index]
      << " (same patterns, same images): RErr difference in points, mean [95% interval], patterns lower / higher\n";
  for (size_t i = 0; i < results.size(); ++i) {
    if (i == base_index) continue;
    const nlohmann::json& j = results[i];
    const std::string& name = names[i];
    const std::string reason = unpaired_reason(base, j);
    if (!reason.empty()) {
      out << "  " << name << ": not paired (" << printable(reason) << ")\n";
      continue;
    }
    std::ostringstream rows;
    // Rounding noise (a mean of -1e-17 printed "-0.00") is 0; a true value below 0.005 points keeps
    // its sign ("-0.00"): an interval [-0.003, +0.5] printed "[+0.00, +0.50]" read as not crossing 0.
    const auto points = [](double x) { return std::abs(100 * x) < 1e-9 ? 0.0 : 100 * x; };
    for (const auto& r : j["results"]) {
      const double rate = r["rate"].get<double>();
      if (rate == 0 && !zero_rate_has_errors(j)) continue;  // the clean models: no patterns
      for (const auto& rb : base["results"]) {
        if (rb["rate"] != r["rate"]) continue;
        std::vector<double> diff;
        int lower = 0, higher = 0;
        for (size_t k = 0; k < r["per_pattern"].size(); ++k) {
          diff.push_back(r["per_pattern"][k].get<double>() - rb["per_pattern"][k].get<double>());
          lower += diff.back() < 0;
          higher += diff.back() > 0;
        }
        const eval::MeanInterval m = eval::mean_interval(diff);
        char interval[48] = "[-]";  // (one pattern has no spread, as in sweep_table)
        if (diff.size() > 1) std::snprintf(interval, sizeof interval, "[%+.2f, %+.2f]", points(m.low), points(m.high));
        std::snprintf(line, sizeof line, "    %-10s %+7.2f  %s  %d / %d of %zu\n", rate_text(rate).c_str(),
                      points(m.mean), interval, lower, higher, diff.size());
        rows << line;
      }
    }
    if (rows.str().empty()) {
      out << "  " << name << ": no rate with bit errors in both results to pair\n";
    } else {
      out << "  " << name << "\n" << rows.str();
    }
  }
  return out.str();
}

std::string rerr_plot_svg(const std::vector<nlohmann::json>& results, const std::string& title) {
  const double W = 800, H = 440, left = 70, right = 310, top = 40, bottom = 60;
  const double pw = W - left - right, ph = H - top - bottom;
  const std::vector<std::string> legend_names = shown_names(results, /*for_svg=*/true);
  // Rate 0 has no place on a log axis. It is the clean model (shown in the legend) unless the error
  // model has errors there ("random,0to1=0.02"): then it gets a column of its own left of the axis.
  bool zero_column = false;
  double rmin = 1, rmax = 0, ymax = 0;
  for (const auto& j : results) {
    const bool zero_has_errors = zero_rate_has_errors(j);
    for (const auto& r : j["results"]) {
      const double rate = r["rate"].get<double>();
      if (rate <= 0 && !zero_has_errors) continue;
      ymax = std::max(ymax, r["rerr_max"].get<double>());
      if (rate <= 0) {
        zero_column = true;
        continue;
      }
      rmin = std::min(rmin, rate);
      rmax = std::max(rmax, rate);
    }
  }
  if (rmax <= 0) { rmin = 1e-4; rmax = 1e-2; }
  double lx0 = std::floor(std::log10(rmin)), lx1 = std::ceil(std::log10(rmax));
  if (lx1 <= lx0) lx1 = lx0 + 1;
  ymax = std::min(1.0, std::ceil(std::max(ymax, 0.05) * 10 + 1e-9) / 10);
  const double zero_x = left + 20, axis_left = zero_column ? left + 50 : left, axis_width = left + pw - axis_left;
  auto X = [&](double rate) {
    return rate <= 0 ? zero_x : axis_left + (std::log10(rate) - lx0) / (lx1 - lx0) * axis_width;
  };
  auto Y = [&](double v) { return top + ph - v / ymax * ph; };
  static const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};
  std::ostringstream s;
  s.precision(5);
  // The canvas grows below the plot for legends longer than it (36 px per result).
  const double canvas = std::max(H, top + 36.0 * static_cast<double>(results.size()) + 20);
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << canvas << "\" viewBox=\"0 0 " << W << ' '
    << canvas << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s << "<text x=\"" << left + pw / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" << xml_escape(title)
    << "</text>\n";
  for (int k = 0; k <= 5; ++k) {  // y grid
    const double v = ymax * k / 5, y = Y(v);
    s << "<line x1=\"" << left << "\" y1=\"" << y << "\" x2=\"" << left + pw << "\" y2=\"" << y
      << "\" stroke=\"#ddd\"/>\n<text x=\"" << left - 8 << "\" y=\"" << y + 4 << "\" text-anchor=\"end\">" << pct(v, 0)
      << "</text>\n";
  }
  std::vector<double> ticks;
  if (zero_column) ticks.push_back(0.0);
  for (int e = static_cast<int>(lx0); e <= static_cast<int>(lx1); ++e) ticks.push_back(std::pow(10.0, e));
  for (double tick : ticks) {  // x decades, and p = 0 when it has its column
    const double x = X(tick);
    s << "<line x1=\"" << x << "\" y1=\"" << top << "\" x2=\"" << x << "\" y2=\"" << top + ph
      << "\" stroke=\"#ddd\"/>\n<text x=\"" << x << "\" y=\"" << top + ph + 18 << "\" text-anchor=\"middle\">"
      << (tick == 0 ? std::string("0") : rate_text(tick)) << "</text>\n";
  }
  if (zero_column) {  // the axis is broken between p = 0 and the first decade
    const double x = (zero_x + axis_left) / 2, y = top + ph;
    s << "<path d=\"M" << x - 6 << ' ' << y + 5 << " L" << x - 2 << ' ' << y - 5 << " M" << x + 2 << ' ' << y + 5 << " L"
      << x + 6 << ' ' << y - 5 << "\" stroke=\"black\"/>\n";
  }
  s << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << pw << "\" height=\"" << ph
    << "\" fill=\"none\" stroke=\"black\"/>\n";
  s << "<text x=\"" << left + pw / 2 << "\" y=\"" << H - 15 << "\" text-anchor=\"middle\">bit error rate p (log scale)</text>\n";
  s << "<text transform=\"translate(18," << top + ph / 2 << ") rotate(-90)\" text-anchor=\"middle\">robust test error RErr (%)</text>\n";
  for (size_t i = 0; i < results.size(); ++i) {
    const auto& j = results[i];
    const char* color = colors[i % 8];
    const bool zero_has_errors = zero_rate_has_errors(j);
    std::vector<const nlohmann::json*> points;  // in increasing rate, so the line runs left to right
    for (const auto& r : j["results"]) {
      if (r["rate"].get<double>() > 0 || zero_has_errors) points.push_back(&r);
    }
    std::stable_sort(points.begin(), points.end(), [](const nlohmann::json* a, const nlohmann::json* b) {
      return (*a)["rate"].get<double>() < (*b)["rate"].get<double>();
    });
    std::ostringstream path;
    bool first = true;
    for (const nlohmann::json* point : points) {
      const auto& r = *point;
      const double x = X(r["rate"].get<double>());
      s << "<line x1=\"" << x << "\" y1=\"" << Y(r["rerr_min"]) << "\" x2=\"" << x << "\" y2=\"" << Y(r["rerr_max"])
        << "\" stroke=\"" << color << "\" stroke-width=\"1.5\"/>\n";
      s << "<circle cx=\"" << x << "\" cy=\"" << Y(r["rerr_mean"]) << "\" r=\"3.5\" fill=\"" << color << "\"/>\n";
      path << (first ? "M" : " L") << x << ' ' << Y(r["rerr_mean"]);
      first = false;
    }
    // Past 8 results the colours repeat: dashed lines and hollow legend squares tell them apart.
    const char* dash = i / 8 % 2 == 1 ? "\" stroke-dasharray=\"6 3" : "";
    s << "<path d=\"" << path.str() << "\" fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2" << dash << "\"/>\n";
    const double ly = top + 14 + 36 * i;
    s << "<rect x=\"" << left + pw + 14 << "\" y=\"" << ly - 9 << "\" width=\"12\" height=\"12\" "
      << (i / 8 % 2 == 1 ? std::string("fill=\"none\" stroke=\"") : std::string("fill=\"")) << color << "\"/>\n";
    s << "<text x=\"" << left + pw + 32 << "\" y=\"" << ly + 1 << "\">" << xml_escape(legend_names[i])
      << "</text>\n";
    s << "<text x=\"" << left + pw + 32 << "\" y=\"" << ly + 16 << "\" font-size=\"10\" fill=\"#555\">"
      << xml_escape(j["scheme"].get<std::string>()) << ", clean " << pct(j["clean_error"]) << "%</text>\n";
  }
  s << "</svg>\n";
  return s.str();
}

}  // namespace bitrobust::report
