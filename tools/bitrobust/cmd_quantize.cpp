// bitrobust quantize: post-training quantization of a float model; bitrobust export: the integer
// codes as raw files plus a JSON manifest for hardware tools.
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "bitrobust/common/error.h"
#include "bitrobust/eval/evaluate.h"
#include "bitrobust/io/model_file.h"
#include "bitrobust/quant/model_quantization.h"
#include "bitrobust/quant/quantize_math.h"
#include "bitrobust/report/output.h"
#include "commands.h"

namespace bitrobust::cli {

namespace {
struct QuantizeCommand {
  CommonOptions common;
  DataOptions data;
  QuantOptions quant;
  std::string model, out;
  int64_t batch = 500;
};

struct ExportCommand {
  std::string model, out;
};

}  // namespace

Runner register_quantize(CLI::App& app) {
  auto cmd = std::make_shared<QuantizeCommand>();
  CLI::App* sub = app.add_subcommand("quantize", "quantize a trained float model and report the error before and after");
  add_common_options(*sub, cmd->common);
  add_data_options(*sub, cmd->data, false);
  add_quant_options(*sub, cmd->quant);
  // Unlike train, where no scheme means float training, quantize always quantizes.
  sub->get_option("--scheme")->description(sub->get_option("--scheme")->get_description() + "; default rquant, 8 bits");
  sub->add_option("--model", cmd->model, "float model file")->required();
  sub->add_option("--out", cmd->out, "quantized model file to write")->required();
  sub->add_option("--batch", cmd->batch, "batch size")->transform(integer_in(1))->capture_default_str();
  return [cmd]() {
    const at::Device device = setup_runtime(cmd->common);
    report::check_output_path(cmd->out, "model file (--out)", report::OutputKind::File);
    report::check_distinct_paths({{cmd->out, "model file (--out)"}, {cmd->common.json, "--json file"}},
                                 {{cmd->model, "model file (--model)"}});
    const quant::QuantScheme scheme = cmd->quant.build_scheme();
    io::ModelFile file = io::load_model_file(cmd->model);
    quant::check_finite_parameters(*file.net, "model " + cmd->model);
    // The errors quantize measures are stored as the file's test errors, which belong to the data
    // set the file names (found by a review: an MNIST error was stored under fashion-mnist).
    const std::string own = file.meta.value("dataset", std::string());
    BR_CHECK(cmd->data.dataset.empty() || own.empty() || cmd->data.dataset == own, "--dataset ", cmd->data.dataset,
             ": quantize records the test error in the model file, on the data set model file ", cmd->model,
             " was trained on (", own, "); leave --dataset out, and use `bitrobust test --dataset ",
             cmd->data.dataset, "` for the error on another");
    const data::Dataset test = load_data_for_model(file, cmd->model, cmd->data, "test", 0, device);
    check_outputs_spare_data({{cmd->out, "model file (--out)"}, {cmd->common.json, "--json file"}}, test);
    const double before = eval::evaluate(*file.net, test, cmd->batch).error;
    const quant::QuantizedModel q = quant::quantize_model(*file.net, scheme, cmd->quant.selector());
    quant::store_in_model_file(q, file);
    const WeightBackup floats(*file.net);
    q.load_clean_weights();
    const double after = eval::evaluate(*file.net, test, cmd->batch).error;
    floats.restore();
    file.meta["float_test_error"] = before;
    file.meta["test_error"] = after;
    file.meta["quantized_by"] = "quantize";  // (after training, whatever the float model's metadata says)
    // The images the errors are of, as test records them (found by a review: --data-root and
    // --device change the errors, and the JSON did not say which).
    const nlohmann::json summary = {{"format", "bitrobust-quantize-1"},
                                    {"model", cmd->model},
                                    {"out", cmd->out},
                                    {"scheme", scheme.to_string()},
                                    {"float_test_error", before},
                                    {"test_error", after},
                                    {"dataset", test.name},
                                    {"split", test.split},
                                    {"cifar_protocol", recorded_protocol(test, cmd->data)},
                                    {"examples", test.size()},
                                    {"data", test.fingerprint()},
                                    {"batch", cmd->batch},
                                    {"device", device.str()},
                                    {"activations", activation_layout(*file.net, test, device)},
                                    {"versions", io::version_info()}};
    save_model_and_json(cmd->out, file, cmd->common.json, summary, [&] {
      std::printf("scheme %s: test error %.2f%% float -> %.2f%% quantized (%+.2f points); %lld weights in %zu "
                  "tensors; saved %s\n",
                  scheme.to_string().c_str(), 100 * before, 100 * after, 100 * (after - before),
                  static_cast<long long>(q.total_weights()), q.tensors.size(), cmd->out.c_str());
    });
    return 0;
  };
}

Runner register_export(CLI::App& app) {
  auto cmd = std::make_shared<ExportCommand>();
  CLI::App* sub = app.add_subcommand("export", "write a quantized model's integer codes as raw files + manifest.json");
  sub->add_option("--model", cmd->model, "quantized model file")->required();
  sub->add_option("--out", cmd->out, "folder to create (must not exist yet)")->required();
  return [cmd]() {
    io::ModelFile file = io::load_model_file(cmd->model);
    const quant::QuantizedModel q = quant::load_from_model_file(file);
    namespace fs = std::filesystem;
    std::string out_text = cmd->out;  // "new/" names the folder "new"
    while (out_text.size() > 1 && out_text.back() == '/') out_text.pop_back();
    const fs::path out(out_text);
    std::error_code exists_ec;
    BR_CHECK(!fs::exists(fs::symlink_status(out, exists_ec)), "export folder ", cmd->out,
             " already exists (or is a link); choose a new one");
    const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
    BR_CHECK(fs::is_directory(parent), "export folder ", cmd->out, ": parent folder ", parent.string(),
             " does not exist");
    // Written into a temporary sibling folder and renamed once complete: nothing half-written remains.
    const fs::path tmp = report::create_temp_folder_for(out_text, "export folder");
    std::error_code ec;
    try {
      nlohmann::json tensors = nlohmann::json::array();
      for (size_t i = 0; i < q.tensors.size(); ++i) {
        const auto& t = q.tensors[i];
        const at::Tensor codes = t.codes.contiguous().cpu();
        const at::Tensor ranges = t.ranges.contiguous().cpu();
        const std::string file_name = q.names[i] + ".bin";
        std::ofstream f(tmp / file_name, std::ios::binary);
        // Little-endian machines only write their native order; bitrobust targets x86-64 and aarch64.
        const auto* bytes = static_cast<const unsigned char*>(codes.data_ptr());
        const size_t size = static_cast<size_t>(codes.numel() * codes.element_size());
        f.write(reinterpret_cast<const char*>(bytes), static_cast<std::streamsize>(size));
        // The stream buffers: a full disk or a file size limit may only show when it is flushed.
        f.close();
        BR_CHECK(!f.fail(), "cannot write ", (tmp / file_name).string(), " (disk full or a file size limit?)");
        report::sync_temp_file((tmp / file_name).string(), (out / file_name).string(), "export file");
        // As zip and gzip compute it (Python: zlib.crc32), for tools loading the codes elsewhere.
        const uint32_t crc = static_cast<uint32_t>(crc32_z(0L, bytes, size));
        nlohmann::json r = nlohmann::json::array(), steps = nlohmann::json::array();
        const float* rp = ranges.data_ptr<float>();
        for (int64_t c = 0; c < t.channels; ++c) {
          r.push_back({rp[2 * c], rp[2 * c + 1]});
          steps.push_back(kernels::make_quant_params({rp[2 * c], rp[2 * c + 1]}, t.format).step);
        }
        tensors.push_back({{"name", q.names[i]},
                           {"file", file_name},
                           {"crc32", crc},
                           {"shape", codes.sizes().vec()},
                           {"bits", t.format.bits},
                           {"container", t.format.bits <= 8 ? "uint8" : "uint16"},
                           {"signed", t.format.is_signed},
                           {"asymmetric", t.format.asymmetric},
                           {"channels", t.channels},
                           {"ranges", r},
                           {"step_eps", t.format.step_eps},
                           {"step", steps}});
      }
      nlohmann::json manifest = {{"format", "bitrobust-codes-1"},
                                 {"byte_order", "little"},
                                 {"scheme", q.scheme.to_string()},
                                 {"model", cmd->model},
                                 {"tensors", tensors}};
      report::write_json_atomic((tmp / "manifest.json").string(), manifest);
      fs::rename(tmp, out, ec);
      BR_CHECK(!ec, "cannot write export folder ", out, ": ", ec.message());
      report::unregister_temp_folder(tmp.string());
    } catch (...) {
      fs::remove_all(tmp, ec);
      report::unregister_temp_folder(tmp.string());
      throw;
    }
    std::printf("exported %zu tensors (%lld codes, scheme %s) to %s\n", q.tensors.size(),
                static_cast<long long>(q.total_weights()), q.scheme.to_string().c_str(), cmd->out.c_str());
    return 0;
  };
}

}  // namespace bitrobust::cli
