#include "bitrobust/io/model_file.h"

#include <ATen/ATen.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/version.h>

#include <filesystem>
#include <fstream>

#include "bitrobust/common/error.h"
#include "bitrobust/config.h"

namespace bitrobust::io {

namespace {
constexpr int64_t kFormatVersion = 1;
}

nlohmann::json version_info() {
  return {{"bitrobust", BITROBUST_VERSION},
          {"torch", TORCH_VERSION},
#ifdef BITROBUST_WITH_CUDA
          {"cuda_kernels", true}
#else
          {"cuda_kernels", false}
#endif
  };
}

void save_model_file(const std::string& path, const ModelFile& file) {
  BR_CHECK(file.net != nullptr, "save_model_file: no network");
  BR_CHECK(file.quant_codes.size() == file.quant_ranges.size(), "save_model_file: codes and ranges differ in count");
  nlohmann::json meta = file.meta;
  meta["spec"] = file.spec.to_json();
  if (!meta.contains("versions")) meta["versions"] = version_info();

  torch::serialize::OutputArchive archive, model_archive, codes_archive, ranges_archive;
  // Saving from the CPU makes files independent of the device they were trained on.
  const auto device = file.net->parameters().empty() ? at::Device(at::kCPU) : file.net->parameters()[0].device();
  file.net->to(at::kCPU);
  file.net->save(model_archive);
  file.net->to(device);
  archive.write("bitrobust_format", at::scalar_tensor(kFormatVersion, at::kLong));
  archive.write("meta", c10::IValue(meta.dump()));
  archive.write("model", model_archive);
  if (!file.quant_codes.empty()) {
    for (size_t i = 0; i < file.quant_codes.size(); ++i) {
      codes_archive.write("p" + std::to_string(i), file.quant_codes[i].cpu(), /*is_buffer=*/true);
      ranges_archive.write("p" + std::to_string(i), file.quant_ranges[i].cpu(), /*is_buffer=*/true);
    }
    archive.write("quant_codes", codes_archive);
    archive.write("quant_ranges", ranges_archive);
  }
  const std::filesystem::path target(path);
  if (target.has_parent_path() && !std::filesystem::exists(target.parent_path())) {
    throw Error("cannot write model file " + path + ": folder " + target.parent_path().string() + " does not exist");
  }
  const std::string tmp = path + ".tmp";
  try {
    archive.save_to(tmp);
  } catch (const c10::Error& e) {
    std::filesystem::remove(tmp);
    throw Error("cannot write model file " + path + ": " + e.what_without_backtrace());
  }
  std::filesystem::rename(tmp, path);
}

ModelFile load_model_file(const std::string& path) {
  BR_CHECK(std::filesystem::exists(path), "model file ", path, " does not exist");
  BR_CHECK(std::filesystem::is_regular_file(path), "model file ", path, " is not a regular file");
  ModelFile file;
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path, at::Device(at::kCPU));
  } catch (const c10::Error& e) {
    throw Error("model file " + path + " is not a readable model archive (truncated or not a bitrobust model)");
  }
  c10::IValue meta_value;
  at::Tensor version;
  if (!archive.try_read("bitrobust_format", version) || !archive.try_read("meta", meta_value) ||
      !meta_value.isString()) {
    throw Error("model file " + path + " is a Torch archive but not a bitrobust model (no bitrobust_format/meta)");
  }
  BR_CHECK(version.item<int64_t>() <= kFormatVersion, "model file ", path, " has format version ",
           version.item<int64_t>(), "; this bitrobust reads up to ", kFormatVersion);
  try {
    file.meta = nlohmann::json::parse(meta_value.toStringRef());
  } catch (const nlohmann::json::exception& e) {
    throw Error("model file " + path + ": corrupt metadata: " + e.what());
  }
  BR_CHECK(file.meta.contains("spec"), "model file ", path, ": metadata has no model description");
  file.spec = models::ModelSpec::from_json(file.meta["spec"]);
  file.net = models::build_model(file.spec);
  try {
    torch::serialize::InputArchive model_archive;
    archive.read("model", model_archive);
    file.net->load(model_archive);
    if (file.meta.contains("quantization")) {
      torch::serialize::InputArchive codes_archive, ranges_archive;
      archive.read("quant_codes", codes_archive);
      archive.read("quant_ranges", ranges_archive);
      const size_t count = file.meta["quantization"]["params"].size();
      for (size_t i = 0; i < count; ++i) {
        at::Tensor codes, ranges;
        codes_archive.read("p" + std::to_string(i), codes, /*is_buffer=*/true);
        ranges_archive.read("p" + std::to_string(i), ranges, /*is_buffer=*/true);
        file.quant_codes.push_back(codes);
        file.quant_ranges.push_back(ranges);
      }
    }
  } catch (const c10::Error& e) {
    throw Error("model file " + path + ": weights do not match the model description (" +
                std::string(e.what_without_backtrace()).substr(0, 200) + ")");
  }
  return file;
}

}  // namespace bitrobust::io
