// bitrobust info: what a model file holds (network, training, robustness options, quantization,
// recorded errors), read and checked as every command reads it, without loading any data set.
#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>
#include <optional>

#include "bitrobust/bits/pattern.h"
#include "bitrobust/common/cpu_description.h"
#include "bitrobust/common/error.h"
#include "bitrobust/io/model_file.h"
#include "bitrobust/quant/model_quantization.h"
#include "bitrobust/report/output.h"
#include "bitrobust/report/printable.h"
#include "commands.h"

namespace bitrobust::cli {

namespace {
struct InfoCommand {
  std::string model;
  std::string json;
};

/// 1234567 -> "1,234,567": parameter and bit counts are read, not parsed.
std::string grouped(int64_t value) {
  std::string digits = std::to_string(value), text;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0 && digits[i - 1] != '-') text += ',';
    text += digits[i];
  }
  return text;
}

/// A metadata value as text ("-" when absent); the fields come from whichever command wrote the file.
std::string field(const nlohmann::json& meta, const char* key) {
  if (!meta.contains(key)) return "-";
  const nlohmann::json& v = meta[key];
  // (a field's text is whatever the file holds: printed so that it cannot change the terminal)
  return report::printable(v.is_string() ? v.get<std::string>() : v.dump());
}

std::string percent(const nlohmann::json& meta, const char* key, const char* format = "%.2f%%") {
  if (!meta.contains(key) || !meta[key].is_number()) return "-";
  char text[32];
  std::snprintf(text, sizeof(text), format, 100 * meta[key].get<double>());
  return text;
}
}  // namespace

Runner register_info(CLI::App& app) {
  auto cmd = std::make_shared<InfoCommand>();
  CLI::App* sub = app.add_subcommand("info", "what a model file holds: network, training, quantization, errors");
  sub->add_option("--model", cmd->model, "model file")->required();
  sub->add_option("--json", cmd->json, "also write it as JSON: the file's metadata and every quantized parameter");
  return [cmd]() {
    if (!cmd->json.empty()) report::check_output_path(cmd->json, "--json file");
    report::check_distinct_paths({{cmd->json, "--json file"}}, {{cmd->model, "model file (--model)"}});
    io::ModelFile file = io::load_model_file(cmd->model);
    // Every check runs before the first line is printed: a damaged file prints only its error.
    std::optional<quant::QuantizedModel> q;
    if (file.meta.contains("quantization")) q = quant::load_from_model_file(file);  // checks codes against ranges
    const nlohmann::json& meta = file.meta;
    int64_t parameters = 0;
    for (const at::Tensor& p : file.net->parameters()) parameters += p.numel();
    const nlohmann::json versions = meta.value("versions", nlohmann::json::object());
    std::printf("%s: bitrobust model file (%s bytes), written by bitrobust %s with Torch %s\n", cmd->model.c_str(),
                grouped(static_cast<int64_t>(std::filesystem::file_size(cmd->model))).c_str(),
                field(versions, "bitrobust").c_str(), field(versions, "torch").c_str());
    // (files written before 2026-12-06 did not record it)
    if (versions.contains("cpu")) std::printf("  cpu         %s\n", describe(cpu_from_json(versions["cpu"])).c_str());
    const models::ModelSpec& s = file.spec;
    std::printf("  network     %s, normalization %s, input %lldx%lldx%lld, %lld classes; %s parameters in %zu tensors\n",
                s.arch.c_str(), s.norm.c_str(), static_cast<long long>(s.in_channels), static_cast<long long>(s.height),
                static_cast<long long>(s.width), static_cast<long long>(s.num_classes), grouped(parameters).c_str(),
                file.net->parameters().size());
    if (meta.contains("epochs")) {
      std::string data = field(meta, "dataset");
      if (data == "cifar10") data += " (" + field(meta, "cifar_protocol") + " protocol)";
      const std::string epochs = field(meta, "epochs"), steps = field(meta, "steps");
      // (momentum, weight decay and device: files written before they were recorded show "-"; the
      // steps are those run, fewer than the epochs' where --max-steps stopped the run)
      std::printf("  training    %s, %s epoch%s scheduled, %s step%s run, batch %s, lr %s, momentum %s, weight decay %s, seed %s, "
                  "init %s, augmentation %s, on %s\n",
                  data.c_str(), epochs.c_str(), epochs == "1" ? "" : "s", steps.c_str(), steps == "1" ? "" : "s",
                  field(meta, "batch").c_str(), field(meta, "lr").c_str(), field(meta, "momentum").c_str(),
                  field(meta, "weight_decay").c_str(), field(meta, "seed").c_str(), field(meta, "init").c_str(),
                  field(meta, "augment").c_str(), field(meta, "device").c_str());
    } else {
      std::printf("  data set    %s\n", field(meta, "dataset").c_str());
    }
    if (meta.contains("randbet") && meta["randbet"].is_object()) {
      const nlohmann::json& r = meta["randbet"];
      // Files written before --randbet-curriculum existed used the "once" curriculum.
      const bool reference = r.value("curriculum", std::string("once")) == "reference";
      std::printf("  RandBET     rate %s, errors %s, mode %s, %s %s (%s perturbed steps)\n", percent(r, "rate", "%g%%").c_str(),
                  field(r, "error_model").c_str(), field(r, "mode").c_str(),
                  reference ? "the reference's curriculum, threshold" : "from loss", field(r, "start_loss").c_str(),
                  field(r, "perturbed_steps").c_str());
    }
    std::printf("  test error  %s", percent(meta, "test_error").c_str());
    if (meta.contains("quantization") && meta.contains("float_test_error")) {
      std::printf(" (float weights %s)", percent(meta, "float_test_error").c_str());
    }
    std::printf("\n");

    nlohmann::json params = nlohmann::json::array();
    if (!q) {
      std::printf("  float model: not quantized (bitrobust quantize makes a quantized copy)\n");
    } else {
      // (files written before 2026-12-05 do not say how they were quantized)
      const std::string by = meta.value("quantized_by", std::string());
      std::printf("  quantized   %s%s: %zu of %zu parameter tensors, %s weights, %s bits\n", q->scheme.to_string().c_str(),
                  by == "training"   ? " (quantization-aware training)"
                  : by == "quantize" ? " (after training, by bitrobust quantize)"
                                     : "",
                  q->tensors.size(), file.net->parameters().size(), grouped(q->total_weights()).c_str(),
                  grouped(q->total_bits()).c_str());
      std::printf("  %-28s %-14s %4s %8s  %s\n", "parameter", "shape", "bits", "ranges", "range (lowest lo, highest hi)");
      for (size_t i = 0; i < q->tensors.size(); ++i) {
        const quant::QuantizedTensor& t = q->tensors[i];
        const at::Tensor ranges = t.ranges.cpu();
        const double lo = ranges.select(1, 0).min().item<double>(), hi = ranges.select(1, 1).max().item<double>();
        const std::string shape = bits::shape_text(t.codes.sizes().vec());
        std::printf("  %-28s %-14s %4d %8lld  [%.6g, %.6g]\n", q->names[i].c_str(), shape.c_str(), t.format.bits,
                    static_cast<long long>(t.channels), lo, hi);
        params.push_back({{"name", q->names[i]}, {"shape", t.codes.sizes().vec()}, {"bits", t.format.bits},
                          {"channels", t.channels}, {"lo", lo}, {"hi", hi}});
      }
    }
    if (!cmd->json.empty()) {
      report::write_json_atomic(cmd->json, {{"format", "bitrobust-info-1"},
                                            {"model", cmd->model},
                                            {"file_bytes", std::filesystem::file_size(cmd->model)},
                                            {"parameters", parameters},
                                            {"meta", meta},
                                            {"quantized_parameters", params},
                                            {"versions", io::version_info()}}, "--json file");
    }
    return 0;
  };
}

}  // namespace bitrobust::cli
