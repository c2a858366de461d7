// bitrobust eval: the bit error benchmark (RErr per rate over seeded patterns);
// bitrobust compare: several results in one table and one plot.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "bitrobust/common/error.h"
#include "bitrobust/eval/bit_error_eval.h"
#include "bitrobust/eval/precision.h"
#include "bitrobust/io/model_file.h"
#include "bitrobust/quant/model_quantization.h"
#include "bitrobust/report/eval_report.h"
#include "bitrobust/report/output.h"
#include "bitrobust/report/printable.h"
#include "commands.h"

namespace bitrobust::cli {

namespace {
// An empty selection would inject nothing and report the clean error as the robust one.
void check_layers_select_something(const quant::QuantizedModel& q, const std::string& layers) {
  if (layers.empty()) return;
  const bits::ParamSelector selector(layers);
  std::string names;
  for (const std::string& name : q.names) {
    if (selector.selects(name)) return;
    if (names.size() < 200) names += (names.empty() ? "" : ", ") + name;
  }
  throw Error("--layers '" + layers + "' matches no quantized parameter (they are: " + names + ")");
}

std::vector<int> code_bits(const quant::QuantizedModel& q) {
  std::vector<int> bits;
  for (const auto& t : q.tensors) bits.push_back(t.format.bits);
  return bits;
}

struct EvalCommand {
  CommonOptions common;
  DataOptions data;
  eval::SweepOptions sweep;
  std::string model, rates = "0.01%,0.1%,1%", csv, plot, name, split = "test", replay, precision;
  int64_t limit = 0;
};
struct PatternCommand {
  std::string model, rate, error_model = "random", layers, out;
  uint64_t seed = 100;
};
struct CompareCommand {
  std::vector<std::string> files;
  std::string plot, title = "Bit error robustness";
  int64_t paired_with = 1;
};
}  // namespace

Runner register_eval(CLI::App& app) {
  auto cmd = std::make_shared<EvalCommand>();
  CLI::App* sub = app.add_subcommand("eval", "robust test error (RErr) of a quantized model under random bit errors");
  add_common_options(*sub, cmd->common);
  add_data_options(*sub, cmd->data, false);
  sub->add_option("--model", cmd->model, "quantized model file")->required();
  sub->add_option("--rates", cmd->rates, "bit error rates: fractions (0.001) or percentages (0.1%), comma separated")
      ->capture_default_str();
  sub->add_option("--patterns", cmd->sweep.patterns, "error patterns (chips) per rate")
      ->transform(integer_in(1, 1000000))
      ->capture_default_str();
  sub->add_option("--seed", cmd->sweep.seed, "first pattern seed, at most 2^63 - 1 (patterns use seed, seed+1, ...)")
      ->transform(integer_in(0))
      ->capture_default_str();
  sub->add_option("--error-model", cmd->sweep.error_model,
                  "random | msb | lsb<k> | stuck_at_0 | stuck_at_1; all but stuck_at may add one of ,0to1=P or "
                  ",1to0=P (that direction's rate fixed at P, the other's each --rates value)")
      ->capture_default_str();
  sub->add_option("--layers", cmd->sweep.layers, "regular expression: inject only into matching parameters");
  sub->add_option("--limit", cmd->limit, "evaluate only the first N examples (0 = all; the reference: 9000 on CIFAR-10)")
      ->transform(integer_in(0));
  sub->add_option("--batch", cmd->sweep.batch_size, "batch size")->transform(integer_in(1))->capture_default_str();
  sub->add_option("--split", cmd->split, "the split to evaluate")->check(CLI::IsMember({"train", "test"}))->capture_default_str();
  sub->add_option("--csv", cmd->csv, "per-pattern values as CSV");
  sub->add_option("--plot", cmd->plot, "RErr against rate as SVG");
  sub->add_option("--name", cmd->name, "model name in tables and plots (default: the file's stem)");
  sub->add_option("--precision", cmd->precision,
                  "inference precision of the network; tf32: convolutions and matrix products; bf16: the whole network, faster on some CPUs (with AMX) and slower on others: time it, and compare RErr with fp32 first (README) (default: tf32 on CUDA, fp32 on the CPU, as PyTorch's convolutions)")
      ->check(CLI::IsMember({"fp32", "tf32", "bf16"}));
  sub->add_option("--replay", cmd->replay, "evaluate exactly this saved pattern file (see `bitrobust pattern`)");
  return [cmd, sub]() {
    // A replayed pattern fixes the rate, seed, error model and layers: other values would be ignored.
    if (!cmd->replay.empty()) {
      for (const char* option : {"--rates", "--patterns", "--seed", "--error-model", "--layers"}) {
        BR_CHECK(sub->count(option) == 0, option, " cannot be combined with --replay: a replay evaluates the one pattern of the file, with the rate, "
                 "seed, error model and layers it was drawn with");
      }
      for (const char* option : {"--csv", "--plot", "--name"}) {
        BR_CHECK(sub->count(option) == 0, option,
                 " describes a sweep and cannot be combined with --replay, which evaluates one pattern (use --json)");
      }
    }
    const at::Device device = setup_runtime(cmd->common);
    if (!cmd->csv.empty()) report::check_output_path(cmd->csv, "--csv file");
    if (!cmd->plot.empty()) report::check_output_path(cmd->plot, "--plot file");
    report::check_distinct_paths(
        {{cmd->common.json, "--json file"}, {cmd->csv, "--csv file"}, {cmd->plot, "--plot file"}},
        {{cmd->model, "model file (--model)"}, {cmd->replay, "pattern file (--replay)"}});
    cmd->sweep.rates = parse_rates_option(cmd->rates, "--rates");
    const eval::Precision precision =
        cmd->precision.empty() ? eval::default_precision(device) : eval::parse_precision(cmd->precision);
    BR_CHECK(cmd->sweep.patterns >= 1, "--patterns must be at least 1, got ", cmd->sweep.patterns);
    BR_CHECK(cmd->sweep.seed <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max() - cmd->sweep.patterns + 1),
             "--seed ", cmd->sweep.seed, " + --patterns ", cmd->sweep.patterns, " runs past the largest seed, 2^63 - 1");
    // Recorded in the results under its canonical name, whichever accepted spelling was typed.
    cmd->sweep.error_model = parse_error_model_option(cmd->sweep.error_model, 0.0, "--error-model").name();
    {
      // Rate 0 draws no errors (unless the model fixes one direction's rate above 0), and the plot
      // shows only rates with errors: a plot of rate 0 alone would be empty (found by a review).
      const bool errors = std::any_of(cmd->sweep.rates.begin(), cmd->sweep.rates.end(), [&](double rate) {
        return bits::ErrorModel::parse(cmd->sweep.error_model, rate).has_errors();
      });
      BR_CHECK(cmd->plot.empty() || errors, "--plot: no rate in --rates draws bit errors, so the plot of RErr against ",
               "the rate would be empty; add a rate above 0");
    }
    cmd->sweep.progress = !cmd->common.quiet;
    io::ModelFile file = io::load_model_file(cmd->model);
    const quant::QuantizedModel q = quant::load_from_model_file(file);
    // Which weights the results are of, whatever the file is called, and the training seed (found
    // by a review: a retrained file under the same name gave results nothing told apart).
    const std::string model_fingerprint = eval::model_fingerprint(*file.net, q);
    const nlohmann::json model_seed =
        file.meta.contains("seed") && file.meta["seed"].is_number_unsigned() ? file.meta["seed"] : nlohmann::json();
    check_layers_select_something(q, cmd->sweep.layers);
    check_error_model_fits(bits::ErrorModel::parse(cmd->sweep.error_model, 0.0), code_bits(q), "--error-model");
    const data::Dataset data = load_data_for_model(file, cmd->model, cmd->data, cmd->split, cmd->limit, device);
    check_outputs_spare_data({{cmd->common.json, "--json file"}, {cmd->csv, "--csv file"}, {cmd->plot, "--plot file"}},
                             data);
    file.net->to(device);
    quant::QuantizedModel qd = q;
    for (auto& t : qd.tensors) {
      t.codes = t.codes.to(device);
      t.ranges = t.ranges.to(device);
    }
    const eval::InferencePrecision precision_guard(precision, *file.net, device);
    // The layout the activations take (results of the two agree to rounding, not bit for bit).
    const std::string activations =
        activation_layout(*file.net, data, device, precision == eval::Precision::Bf16);
    auto named = file.net->named_parameters();
    for (size_t i = 0; i < qd.names.size(); ++i) qd.params[i] = named[qd.names[i]];

    if (!cmd->replay.empty()) {
      const bits::BitPattern pattern = bits::load_pattern(cmd->replay, eval::param_specs(qd));
      const eval::PatternResult r = eval::evaluate_pattern(*file.net, qd, data, pattern, cmd->sweep.batch_size);
      // The header's seed, rate and error model label the result; whether they drew these flips is
      // checked by drawing again (O(selected bits)): an edited or hand-made file is replayed too, but
      // said to be one (found by a review: an edited seed was recorded as if it had drawn the flips).
      const bool drawn = bits::drawn_by_its_header(pattern);
      if (!drawn) {
        std::fprintf(stderr, "note: pattern file %s holds other flips than seed %llu draws at %s%s: it was edited or "
                             "made elsewhere, and its header's seed and rate do not describe it\n",
                     report::printable(cmd->replay).c_str(), static_cast<unsigned long long>(pattern.seed),
                     pattern.model.to_string().c_str(), pattern.layers.empty() ? "" : " in these layers");
      }
      const std::string layers = pattern.layers.empty() ? "" : ", layers '" + report::printable(pattern.layers) + "'";
      std::printf("pattern %s (%s%s, seed %llu, %zu selected bits, %lld changed): clean error %.2f%%, perturbed error "
                  "%.2f%%, RErr %.2f%%\n",
                  cmd->replay.c_str(), pattern.model.to_string().c_str(), layers.c_str(),
                  static_cast<unsigned long long>(pattern.seed),
                  pattern.flips.size(), static_cast<long long>(r.bits_changed), 100 * r.clean_error,
                  100 * r.perturbed_error, 100 * r.rerr);
      if (!cmd->common.json.empty()) {
        report::write_json_atomic(cmd->common.json, {{"format", "bitrobust-replay-1"},
                                                     {"model", cmd->model},
                                                     {"model_fingerprint", model_fingerprint},
                                                     {"model_seed", model_seed},
                                                     {"pattern", cmd->replay},
                                                     {"seed", pattern.seed},
                                                     {"error_model", pattern.model.name()},
                                                     // (null: a version 1 file, which did not record them)
                                                     {"layers", pattern.layers_recorded ? nlohmann::json(pattern.layers)
                                                                                        : nlohmann::json()},
                                                     // whether (seed, error_model, rate, layers) draw these flips
                                                     {"drawn", drawn},
                                                     {"rate", pattern.model.rate},
                                                     {"clean_error", r.clean_error},
                                                     {"perturbed_error", r.perturbed_error},
                                                     {"rerr", r.rerr},
                                                     {"bits_changed", r.bits_changed},
                                                     {"precision", eval::precision_name(precision)},
                                                     {"activations", activations},
                                                     {"device", device.str()},
                                                     {"batch", cmd->sweep.batch_size},
                                                     // the images, as a sweep records them: a replay
                                                     // is checked against its sweep on these
                                                     {"dataset", data.name},
                                                     {"split", data.split},
                                                     {"cifar_protocol", recorded_protocol(data, cmd->data)},
                                                     {"limit", cmd->limit},
                                                     {"examples", data.size()},
                                                     {"data", data.fingerprint()},
                                                     {"versions", io::version_info()}}, "--json file");
      }
      return 0;
    }
    const eval::SweepResult sweep = eval::run_sweep(*file.net, qd, data, cmd->sweep);
    report::SweepContext ctx;
    ctx.model = cmd->model;
    ctx.model_name = cmd->name.empty() ? std::filesystem::path(cmd->model).stem().string() : cmd->name;
    ctx.scheme = q.scheme.to_string();
    ctx.error_model = cmd->sweep.error_model;
    ctx.layers = cmd->sweep.layers;
    ctx.dataset = data.name;
    ctx.split = data.split;
    ctx.cifar_protocol = recorded_protocol(data, cmd->data);
    ctx.device = device.str();
    ctx.precision = eval::precision_name(precision);
    ctx.activations = activations;
    ctx.limit = cmd->limit;
    ctx.batch = cmd->sweep.batch_size;
    ctx.data = data.fingerprint();
    ctx.model_fingerprint = model_fingerprint;
    ctx.model_seed = model_seed;
    std::vector<std::vector<int64_t>> shapes;
    std::vector<int> widths;
    for (const auto& t : q.tensors) {
      shapes.push_back(t.codes.sizes().vec());
      widths.push_back(t.format.bits);
    }
    ctx.layout = report::layout_of(shapes, widths);
    const nlohmann::json j = report::sweep_to_json(sweep, cmd->sweep, ctx);
    std::printf("%s", report::sweep_table(j).c_str());
    if (sweep.perturbed_passes == 0) {  // (every rate was 0 of an error model that changes nothing there)
      std::printf("%lld images, no pattern changed a bit (rate 0 is the clean model): nothing to time\n",
                  static_cast<long long>(sweep.examples));
    } else {
      // Every pattern at every rate with errors is a pass over the images (found by a review: the
      // line gave the patterns per rate, and a rate of its figure per second).
      const long long passes = static_cast<long long>(sweep.perturbed_passes);
      const long long per_rate = static_cast<long long>(cmd->sweep.patterns);
      std::printf("%lld images x %lld pattern%s (%lld at each of %lld rate%s) in %.1f s: %.0f images x patterns / s\n",
                  static_cast<long long>(sweep.examples), passes, passes == 1 ? "" : "s", per_rate, passes / per_rate,
                  passes / per_rate == 1 ? "" : "s", sweep.seconds, sweep.images_patterns_per_second);
    }
    // All written before any is renamed into place: a failing output (a full disk) leaves none of
    // them changed. (A rename failing after another succeeded, which the checks before the sweep
    // make unlikely, leaves the earlier ones replaced.)
    report::write_texts_atomic(
        {{cmd->common.json, cmd->common.json.empty() ? "" : report::json_text(j), "--json file"},
         {cmd->csv, cmd->csv.empty() ? "" : report::sweep_csv(j), "--csv file"},
         {cmd->plot, cmd->plot.empty() ? "" : report::rerr_plot_svg({j}, "Bit error robustness"), "--plot file"}});
    return 0;
  };
}

Runner register_pattern(CLI::App& app) {
  auto cmd = std::make_shared<PatternCommand>();
  CLI::App* sub = app.add_subcommand("pattern", "save the bit error pattern of (seed, rate) for a model, for replay");
  sub->add_option("--model", cmd->model, "quantized model file")->required();
  sub->add_option("--rate", cmd->rate, "bit error rate (0.01 or 1%)")->required();
  sub->add_option("--seed", cmd->seed, "pattern seed, at most 2^63 - 1 (as in eval)")->transform(integer_in(0))->capture_default_str();
  sub->add_option("--error-model", cmd->error_model, "as in eval")->capture_default_str();
  sub->add_option("--layers", cmd->layers, "regular expression: only matching parameters");
  sub->add_option("--out", cmd->out, "pattern file to write (format: docs/bit_errors.md)")->required();
  return [cmd]() {
    const std::vector<double> rate = parse_rates_option(cmd->rate, "--rate");
    BR_CHECK(rate.size() == 1, "--rate takes one rate, got '", cmd->rate, "'");
    report::check_output_path(cmd->out, "pattern file (--out)");
    report::check_distinct_paths({{cmd->out, "pattern file (--out)"}}, {{cmd->model, "model file (--model)"}});
    const bits::ErrorModel model = parse_error_model_option(cmd->error_model, rate[0], "--error-model");
    io::ModelFile file = io::load_model_file(cmd->model);
    const quant::QuantizedModel q = quant::load_from_model_file(file);
    check_layers_select_something(q, cmd->layers);
    check_error_model_fits(model, code_bits(q), "--error-model");
    const bits::ParamSelector layers(cmd->layers);
    // A listed flip costs about 80 bytes while drawn and 12 in the file: a pattern of hundreds of
    // millions of flips (100% of a large model) would run out of memory after minutes (found by a
    // review). Bounded by the bits the selected tensors hold, at the larger of the two directions'
    // rates, before anything is drawn.
    double reachable = 0.0;  // the bits the error model may hit in the selected tensors
    for (size_t i = 0; i < q.tensors.size(); ++i) {
      if (!layers.selects(q.names[i])) continue;
      reachable += static_cast<double>(q.tensors[i].codes.numel()) *
                   model.kernel_params(q.tensors[i].format.bits).bit_count;
    }
    const double expected = reachable * std::min(1.0, std::max(model.effective_rate_0to1(), model.effective_rate_1to0()));
    constexpr double kMostFlips = 5e7;
    BR_CHECK(expected <= kMostFlips, "pattern --rate ", cmd->rate, ": about ", static_cast<long long>(expected),
             " of the ", static_cast<long long>(reachable), " bits errors may hit would be listed, more than the ",
             static_cast<long long>(kMostFlips), " `pattern` lists (about 80 bytes each while drawn, 12 in the file); "
             "use a lower rate or --layers");
    const bits::BitPattern pattern = bits::draw_pattern(eval::param_specs(q), model, cmd->seed, layers);
    bits::save_pattern(cmd->out, pattern, "pattern file (--out)");
    const auto selected = std::count_if(q.names.begin(), q.names.end(), [&](const std::string& n) { return layers.selects(n); });
    std::printf("pattern of seed %llu at %s: %zu bit%s selected in %lld of %zu tensors; saved %s\n",
                static_cast<unsigned long long>(cmd->seed), pattern.model.to_string().c_str(), pattern.flips.size(),
                pattern.flips.size() == 1 ? "" : "s", static_cast<long long>(selected), q.tensors.size(),
                cmd->out.c_str());
    return 0;
  };
}

Runner register_compare(CLI::App& app) {
  auto cmd = std::make_shared<CompareCommand>();
  CLI::App* sub = app.add_subcommand("compare", "compare several `bitrobust eval --json` results in one table and plot");
  sub->add_option("results", cmd->files, "result JSON files")->required();
  sub->add_option("--plot", cmd->plot, "write the comparison plot (SVG)");
  sub->add_option("--title", cmd->title, "plot title (with --plot)");
  sub->add_option("--paired-with", cmd->paired_with,
                  "which result (1 = the first) the others are compared with pattern by pattern")
      ->transform(integer_in(1))
      ->capture_default_str();
  return [cmd, sub]() {
    BR_CHECK(sub->count("--title") == 0 || !cmd->plot.empty(), "--title names the plot, and no --plot file is given");
    BR_CHECK(cmd->paired_with <= static_cast<int64_t>(cmd->files.size()), "--paired-with ", cmd->paired_with,
             " names a result beyond the ", cmd->files.size(), " given");
    if (!cmd->plot.empty()) {
      report::check_output_path(cmd->plot, "--plot file");
      std::vector<report::NamedPath> inputs;
      for (const auto& path : cmd->files) inputs.push_back({path, "result file " + path});
      report::check_distinct_paths({{cmd->plot, "--plot file"}}, inputs);
    }
    std::vector<nlohmann::json> results;
    for (const auto& path : cmd->files) {
      BR_CHECK(std::filesystem::is_regular_file(path), "result file ", path,
               std::filesystem::exists(path) ? " is not a regular file" : " does not exist");
      std::ifstream in(path);
      BR_CHECK(in.good(), "result file ", path, " cannot be read");
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(in);
      } catch (const nlohmann::json::exception& e) {
        throw Error("result file " + path + " is not valid JSON: " + json_error_text(e.what()));
      }
      report::validate_sweep_json(j, path);
      results.push_back(j);
    }
    std::printf("%s", report::compare_table(results).c_str());
    std::printf("%s", report::paired_table(results, static_cast<size_t>(cmd->paired_with - 1)).c_str());
    if (!cmd->plot.empty()) {
      report::write_text_atomic(cmd->plot, report::rerr_plot_svg(results, cmd->title), "--plot file");
      std::printf("plot written to %s\n", cmd->plot.c_str());
    }
    return 0;
  };
}

}  // namespace bitrobust::cli
