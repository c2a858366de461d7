// bitrobust test: clean test error of a saved model.
#include <cstdio>

#include "bitrobust/common/error.h"
#include "bitrobust/eval/evaluate.h"
#include "bitrobust/io/model_file.h"
#include "bitrobust/quant/model_quantization.h"
#include "bitrobust/report/output.h"
#include "commands.h"

namespace bitrobust::cli {

namespace {
struct TestCommand {
  CommonOptions common;
  DataOptions data;
  std::string model;
  std::string split = "test";
  int64_t batch = 500;
  int64_t limit = 0;
};
}  // namespace

Runner register_test(CLI::App& app) {
  auto cmd = std::make_shared<TestCommand>();
  CLI::App* sub = app.add_subcommand("test", "clean test error of a saved model");
  add_common_options(*sub, cmd->common);
  add_data_options(*sub, cmd->data, false);
  sub->add_option("--model", cmd->model, "model file")->required();
  sub->add_option("--split", cmd->split, "the split to evaluate")->check(CLI::IsMember({"train", "test"}))->capture_default_str();
  sub->add_option("--batch", cmd->batch, "batch size")->transform(integer_in(1))->capture_default_str();
  sub->add_option("--limit", cmd->limit, "evaluate only the first N examples (0 = all)")->transform(integer_in(0));
  return [cmd]() {
    const at::Device device = setup_runtime(cmd->common);
    report::check_distinct_paths({{cmd->common.json, "--json file"}}, {{cmd->model, "model file (--model)"}});
    io::ModelFile file = io::load_model_file(cmd->model);
    const data::Dataset data = load_data_for_model(file, cmd->model, cmd->data, cmd->split, cmd->limit, device);
    check_outputs_spare_data({{cmd->common.json, "--json file"}}, data);
    std::string scheme = "float";
    if (file.meta.contains("quantization")) {
      // A quantized model is tested with its stored integer codes, dequantized.
      const quant::QuantizedModel q = quant::load_from_model_file(file);
      q.load_clean_weights();
      scheme = q.scheme.to_string();
    }
    const eval::EvalResult result = eval::evaluate(*file.net, data, cmd->batch);
    std::printf("test error %.2f%% (%s; %lld of %lld %s %s images misclassified%s)\n", 100 * result.error,
                scheme.c_str(), static_cast<long long>(std::llround(result.error * result.examples)),
                static_cast<long long>(result.examples), data.name.c_str(), data.split.c_str(),
                protocol_note(data, cmd->data).c_str());
    if (!cmd->common.json.empty()) {
      report::write_json_atomic(cmd->common.json, {{"format", "bitrobust-test-1"},
                                                   {"model", cmd->model},
                                                   {"dataset", data.name},
                                                   {"split", data.split},
                                                   // the images, as eval's JSON names them
                                                   {"cifar_protocol", recorded_protocol(data, cmd->data)},
                                                   {"limit", cmd->limit},
                                                   {"data", data.fingerprint()},
                                                   {"examples", result.examples},
                                                   {"test_error", result.error},
                                                   {"scheme", scheme},
                                                   {"device", device.str()},
                                                   {"activations", activation_layout(*file.net, data, device)},
                                                   {"seconds", result.seconds},
                                                   {"versions", io::version_info()}}, "--json file");
    }
    return 0;
  };
}

}  // namespace bitrobust::cli
