#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "bitrobust/common/error.h"
#include "bitrobust/common/runtime.h"
#include "bitrobust/config.h"
#include "bitrobust/eval/bit_error_eval.h"
#include "bitrobust/models/models.h"
#include "bitrobust/report/output.h"
#include "bitrobust/report/printable.h"
#include "commands.h"

namespace bitrobust::cli {

CLI::Validator integer_in(int64_t min, int64_t max) {
  const std::string range = max == std::numeric_limits<int64_t>::max()
                                ? "an integer >= " + std::to_string(min)
                                : "an integer in " + std::to_string(min) + ".." + std::to_string(max);
  return CLI::Validator(
      [min, max, range](std::string& text) -> std::string {
        int64_t value = 0;
        const char* end = text.data() + text.size();
        const auto [ptr, ec] = std::from_chars(text.data(), end, value);
        if (ec == std::errc() && ptr == end && value >= min && value <= max) {
          // CLI11 converts with base 0 (strtoll): "010" would become 8. Its decimal value is passed on.
          text = std::to_string(value);
          return {};
        }
        if (ec == std::errc::result_out_of_range && ptr == end) {
          return text[0] == '-' ? "must be " + range + ", got '" + text + "'"
                                : "must be " + range + ", got '" + text + "', beyond the largest, " + std::to_string(max);
        }
        return "must be " + range + ", got '" + text + "'";
      },
      range);
}

CLI::Validator decimal_in(double min, double max, bool open_min, bool open_max) {
  const auto number = [](double x) {
    char text[32];
    std::snprintf(text, sizeof text, "%g", x);
    return std::string(text);
  };
  const std::string range = "a number in " + std::string(open_min ? "(" : "[") + number(min) + ", " + number(max) +
                            (open_max ? ")" : "]");
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        const char* begin = text.c_str();
        char* end = nullptr;
        errno = 0;
        const double x = std::strtod(begin, &end);
        // (strtod also reads hexadecimal, "0x10" as 16: not what a decimal option means.)
        const bool hex = text.find_first_of("xX") != std::string::npos;
        const bool whole = !text.empty() && !hex && end == begin + text.size() && errno != ERANGE;
        if (whole && std::isfinite(x) && (open_min ? x > min : x >= min) && (open_max ? x < max : x <= max)) return {};
        return "must be " + range + ", got '" + text + "'";
      },
      range);
}

void add_common_options(CLI::App& cmd, CommonOptions& common) {
  cmd.add_option("--device", common.device, "where to compute (cuda: a GPU, with a CUDA build)")->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  // A count beyond the machine's is a bad command line (status 2), as any value out of its range is.
  // Added as a transform after integer_in, so it runs first (CLI11 puts each transform ahead of the
  // validators already there): a count past int64 gets this message, not int64's limit.
  const CLI::Validator at_most_4_per_core(
      [](std::string& text) -> std::string {
        const bool digits = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
        if (!digits) return {};  // integer_in's message
        int64_t value = 0;
        const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (ec == std::errc() && value <= max_cpu_threads()) return {};
        return text + " is more than 4 per core on this machine (" +
               std::to_string(std::thread::hardware_concurrency()) + " cores; at most " +
               std::to_string(max_cpu_threads()) + ")";
      },
      "");
  cmd.add_option("--threads", common.threads, "CPU threads, at most 4 per core (default 0: one per core)")
      ->transform(integer_in(0))  // (bounded by at_most_4_per_core, before it reaches an int)
      ->transform(at_most_4_per_core);
  cmd.add_option("--json", common.json, "write the run's figures to this JSON file");
  cmd.add_flag("--quiet", common.quiet, "no progress bar");
}

at::Device setup_runtime(const CommonOptions& common) {
  configure_cpu_runtime(common.threads);
  // BITROBUST_CHANNELS_LAST=0 keeps CPU inference NCHW (SimpleNet, WRN, ResNet-20; models.h,
  // set_channels_last_inference): for comparisons, or a CPU whose oneDNN is slower channels-last.
  if (const char* layout = std::getenv("BITROBUST_CHANNELS_LAST"); layout != nullptr && *layout != '\0') {
    const std::string value = layout;
    BR_CHECK(value == "0" || value == "1", "BITROBUST_CHANNELS_LAST must be 0 or 1 (or unset), got '", value, "'");
    models::set_channels_last_inference(value == "1");
  }
  if (!common.json.empty()) report::check_output_path(common.json, "--json file");
  if (common.device == "cuda") {
#ifdef BITROBUST_WITH_CUDA
    BR_CHECK(torch::cuda::is_available(), "--device cuda: this build has CUDA, but no CUDA device is available");
#else
    BR_CHECK(torch::cuda::is_available(), "--device cuda: this build has no CUDA (README: Building against a CUDA LibTorch)");
#endif
    return at::Device(at::kCUDA);
  }
  return at::Device(at::kCPU);
}

void add_data_options(CLI::App& cmd, DataOptions& data, bool for_training) {
  auto* opt = cmd.add_option("--dataset", data.dataset,
                             for_training ? "the data set to train on" : "the data set (default: the model file's)")
                  ->check(CLI::IsMember(data::dataset_names()));
  if (for_training) opt->required();
  cmd.add_option("--data-root", data.root,
                 "folder holding the data set's files, or a folder of one folder per data set (default: "
                 "$BITROBUST_DATA, else where set-up puts them)");
  cmd.add_option("--cifar-protocol", data.protocol,
                 std::string("CIFAR-10 split protocol: holdout (train 1-4, test 5), jpeg (JPEG test copy), official "
                             "(train 1-5, test the test batch) (default: ") +
                     (for_training ? "holdout)" : "the model file's, else holdout)"))
      ->check(CLI::IsMember({"holdout", "jpeg", "official"}));
}

std::string protocol_note(const data::Dataset& data, const DataOptions& options) {
  if (data.name != "cifar10" || options.protocol.empty()) return "";
  std::string note = "; " + options.protocol + " protocol";
  if (options.protocol == "holdout") note += data.split == "test" ? ": training batch 5" : ": training batches 1-4";
  return note;
}

std::string recorded_protocol(const data::Dataset& data, const DataOptions& options) {
  return data.name == "cifar10" ? options.protocol : "";
}

std::string activation_layout(const models::Classifier& net, const data::Dataset& data, at::Device device, bool bf16) {
  const at::Tensor input_like = at::empty({1, data.images.size(1), data.images.size(2), data.images.size(3)},
                                          at::TensorOptions().dtype(bf16 ? at::kBFloat16 : at::kFloat).device(device));
  return models::infers_channels_last(net, input_like) ? "channels_last" : "nchw";
}

void check_cifar_protocol_applies(const DataOptions& options) {
  BR_CHECK(options.protocol.empty() || options.dataset == "cifar10", "--cifar-protocol ", options.protocol,
           ": only CIFAR-10 has split protocols, and the data set is ", options.dataset);
}

data::Dataset load_data(const DataOptions& options, const std::string& split, at::Device device) {
  data::DatasetRequest request;
  request.name = options.dataset;
  request.split = split;
  request.root = options.root;
  request.protocol = options.protocol.empty() ? "holdout" : options.protocol;
  data::Dataset d = data::load_dataset(request);
  return device.is_cpu() ? d : d.to(device);
}

void check_outputs_spare_data(const std::vector<report::NamedPath>& outputs, const data::Dataset& data) {
  std::vector<report::NamedPath> inputs;
  for (const std::string& file : data.files) inputs.push_back({file, "data file"});
  report::check_distinct_paths(outputs, inputs);
}

data::Dataset load_data_for_model(const io::ModelFile& file, const std::string& model_path, DataOptions& options,
                                  const std::string& split, int64_t limit, at::Device device) {
  if (options.dataset.empty()) {
    options.dataset = file.meta.value("dataset", std::string());
    BR_CHECK(!options.dataset.empty(), "model file ", model_path, " names no data set: pass --dataset");
    const std::vector<std::string> known = data::dataset_names();
    BR_CHECK(std::find(known.begin(), known.end(), options.dataset) != known.end(), "model file ", model_path,
             " names an unknown data set '", options.dataset, "': pass --dataset");
  }
  check_cifar_protocol_applies(options);
  if (options.protocol.empty() && options.dataset == "cifar10") {
    options.protocol = file.meta.value("cifar_protocol", std::string("holdout"));  // (one of them: load_model_file)
  }
  // holdout tests on batch 5, which the other protocols train on: a "test error" on training images.
  const std::string trained = file.meta.value("cifar_protocol", std::string());
  BR_CHECK(!(split == "test" && options.dataset == "cifar10" && options.protocol == "holdout" &&
             file.meta.value("dataset", std::string()) == "cifar10" && (trained == "jpeg" || trained == "official")),
           "--cifar-protocol holdout tests on batch 5, on which model file ", model_path, " was trained (its ",
           trained, " protocol trains on batches 1-5): use --cifar-protocol ", trained,
           ", or --split train for the error on its training images");
  data::Dataset data = load_data(options, split, device);
  if (limit > 0) data = data.head(limit);
  BR_CHECK(file.spec.num_classes == data.num_classes, "model ", model_path, " predicts ", file.spec.num_classes,
           " classes but data set ", data.name, " has ", data.num_classes);
  BR_CHECK(file.spec.in_channels == data.channels() && file.spec.height == data.height() &&
               file.spec.width == data.width(),
           "model ", model_path, " takes ", file.spec.in_channels, "x", file.spec.height, "x", file.spec.width,
           " images but data set ", data.name, " has ", data.channels(), "x", data.height(), "x", data.width());
  // Another data set than the model's is allowed (MNIST and Fashion-MNIST share a shape, and a
  // transfer is a fair question) but said: an error near chance would otherwise read as a broken model.
  if (const std::string trained_on = file.meta.value("dataset", std::string());
      !trained_on.empty() && trained_on != data.name) {
    std::fprintf(stderr, "note: model file %s was trained on %s; evaluating on %s (--dataset)\n",
                 report::printable(model_path).c_str(), report::printable(trained_on).c_str(), data.name.c_str());
  }
  return data;
}

void check_error_model_fits(const bits::ErrorModel& model, const std::vector<int>& code_bits, const char* option) {
  try {
    for (const int bits : code_bits) model.kernel_params(bits);
  } catch (const Error& e) {
    throw Error(std::string(option) + " " + model.name() + ": " + e.what());
  }
}

std::vector<double> parse_rates_option(const std::string& text, const std::string& option) {
  std::vector<std::string> entries;
  const std::vector<double> rates = eval::parse_rates(text, option, &entries);
  for (size_t i = 0; i < rates.size(); ++i) {
    const double rate = rates[i];
    const std::string& entry = entries[i];
    if (rate >= 0.5 && entry.find('%') == std::string::npos) {
      std::fprintf(stderr, "note: %s: '%s' is a fraction of the bits, %g%%; a percentage is written with %% (%s%%)\n",
                   option.c_str(), report::printable_message(entry).c_str(), 100 * rate,
                   report::printable_message(entry).c_str());
    }
  }
  return rates;
}

bits::ErrorModel parse_error_model_option(const std::string& name, double rate, const char* option) {
  bits::ErrorModel model;
  try {
    model = bits::ErrorModel::parse(name, rate);
  } catch (const Error& e) {
    std::string message = e.what();
    const std::string prefix = "error model: ";
    if (message.compare(0, prefix.size(), prefix) == 0) message.erase(0, prefix.size());
    throw Error(std::string(option) + ": " + message);
  }
  // Every command pairs the model with a rate (--rates, --rate, --randbet): a model fixing both
  // directions' rates would make every rate give the same errors, recorded under different rates.
  BR_CHECK(!(model.rate_0to1 >= 0.0 && model.rate_1to0 >= 0.0), option, ": '", name, "' sets both the 0to1 and the ",
           "1to0 rate, so the rate it goes with would change nothing; set one of them (the other direction takes the rate)");
  return model;
}

void add_quant_options(CLI::App& cmd, QuantOptions& q) {
  // A scheme string that does not parse is a bad value (status 2), named with what is wrong in it.
  const CLI::Validator scheme_string(
      [](std::string& text) -> std::string {
        if (text == "normal" || text == "rquant") return {};
        try {
          quant::QuantScheme::parse(text).validate();
          return {};
        } catch (const Error& e) {
          return e.what();
        }
      },
      "");
  cmd.add_option("--scheme", q.scheme,
                 "quantization scheme: normal | rquant (with --bits, --clip) or a scheme string such as "
                 "u8-asym-tensor-round-clip0.1 (docs/quantization.md)")
      ->check(scheme_string);
  cmd.add_option("--bits", q.bits, "bits per weight, 2..16 (with a preset scheme; default 8)")
      ->transform(integer_in(2, 16));
  // Bounds lie in [1e-30, 1e30] (kMinQuantBound, kMaxQuantMagnitude in quant/quantize_math.h).
  cmd.add_option("--clip", q.clip, "weight clipping bound w_max > 0: weights and quantization range in [-w_max, w_max]")
      ->check(decimal_in(1e-30, 1e30, false, false));
  cmd.add_option("--quant-include", q.include,
                 "quantize only parameters matching these globs (e.g. 'conv*'), or regular expressions written "
                 "re:... (e.g. 're:conv[0-9]+\\.weight')");
  cmd.add_option("--quant-exclude", q.exclude, "do not quantize parameters matching these globs (or re:...)");
}

quant::QuantScheme QuantOptions::build_scheme() const {
  BR_CHECK(bits == 0 || (bits >= 2 && bits <= 16), "--bits must be in 2..16, got ", bits);
  BR_CHECK(clip == 0 || (clip > 0 && std::isfinite(clip)), "--clip must be a bound > 0, got ", clip);
  const std::string name = scheme.empty() ? "rquant" : scheme;
  if (name == "normal" || name == "rquant") return quant::QuantScheme::preset(name, bits == 0 ? 8 : bits, clip);
  BR_CHECK(bits == 0 && clip == 0, "--bits and --clip go with a preset scheme (normal, rquant); a scheme string such as '",
           name, "' sets them itself (u8..., and a -clip<W> suffix)");
  quant::QuantScheme s = quant::QuantScheme::parse(name);
  s.validate();
  return s;
}

WeightBackup::WeightBackup(models::Classifier& net) {
  for (auto& p : net.parameters()) {
    params_.push_back(p);
    saved_.push_back(p.detach().clone());
  }
}

void WeightBackup::restore() const {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) params_[i].copy_(saved_[i]);
}

void save_model_and_json(const std::string& out, const io::ModelFile& file, const std::string& json_path,
                         const nlohmann::json& summary, const std::function<void()>& announce) {
  const bool json_in_place = !json_path.empty() && report::is_special_output(json_path);
  const std::string json = json_path.empty() ? "" : report::json_text(summary);
  io::save_model_file(out, file, {{json_in_place ? "" : json_path, json, "--json file"}}, "model file (--out)");
  announce();
  if (!json_in_place) return;
  try {
    report::write_text_atomic(json_path, json, "--json file");
  } catch (const Error& e) {
    // A device or pipe is written after the model (see above): the model file is there, and the
    // error must not read as if the run's work were lost.
    throw Error(std::string(e.what()) + " (the model file " + out + " was written)");
  }
}

}  // namespace bitrobust::cli
