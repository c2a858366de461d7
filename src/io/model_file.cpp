#include "bitrobust/io/model_file.h"

#include <ATen/ATen.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <set>

#include "bitrobust/common/cpu_description.h"
#include "bitrobust/common/error.h"
#include "bitrobust/config.h"
#include "bitrobust/data/dataset.h"
#include "bitrobust/io/archive_check.h"
#include "bitrobust/io/zip_checksums.h"
#include "bitrobust/quant/quantize_math.h"
#include "bitrobust/report/output.h"

namespace bitrobust::io {

namespace {
constexpr int64_t kFormatVersion = 1;

// NOTE [Damaged model files]: a Torch archive declares each storage's size in its pickle and keeps
// the bytes in a separate zip record; LibTorch 1.13 allocates the declared size and does not check
// that the record is as long, so a damaged file yields tensors that read past their data (random
// weights, different on every run). Every tensor read is therefore tallied, once per storage, and
// the storages' sizes must be the sizes of the file's data records, one record each. Which record
// backs which storage is not visible through LibTorch's API, so what is compared is the two lists of
// sizes, sorted: a short record is caught even when another record is longer by as much, or when an
// extra record makes up the total (both passed a comparison of totals); only a file whose records'
// sizes were permuted among its storages would pass. Each tensor must also fit inside its storage.
struct StorageTally {
  std::set<const void*> seen;
  std::vector<int64_t> storage_bytes;  // per distinct storage

  std::string file;  // "model file PATH", "checkpoint PATH": how errors name the file

  void add(const at::Tensor& t, const std::string& what) {
    if (!t.defined()) return;
    // (Empty storages have no data to read past, and may all have a null address: left out, as
    // records of 0 bytes are below.)
    if (t.storage().nbytes() > 0 && seen.insert(t.storage().data()).second) {
      storage_bytes.push_back(static_cast<int64_t>(t.storage().nbytes()));
    }
    if (t.numel() == 0) return;
    int64_t last = t.storage_offset();
    for (int64_t d = 0; d < t.dim(); ++d) {
      BR_CHECK(t.stride(d) >= 0, file, ": tensor ", what, " has a negative stride");
      // A stride of 0 repeats one value along a dimension: no writer of weights does that.
      BR_CHECK(t.stride(d) > 0 || t.size(d) == 1, file, ": tensor ", what, " of shape ", t.sizes(),
               " repeats its data (stride 0 in dimension ", d, "; edited or damaged file)");
      last += (t.size(d) - 1) * t.stride(d);
    }
    const int64_t needed = (last + 1) * static_cast<int64_t>(t.element_size());
    BR_CHECK(static_cast<int64_t>(t.storage().nbytes()) >= needed, file, ": tensor ", what,
             " of shape ", t.sizes(), " lies outside its data (damaged file)");
  }

  /// `records`: the archive's zip directory, already checked (NOTE [Record checksums]).
  void check_against_records(const std::vector<ZipRecord>& records) const {
    std::vector<int64_t> held;
    for (const ZipRecord& record : records) {
      // "<archive>/data/<key>": the storages (not "<archive>/.data/..." that Torch 2.x adds).
      // (without regard to case, as LibTorch finds records: NOTE [Archive pickles])
      if (record_lookup_name(record.name).find("/data/") != std::string::npos && record.uncompressed_size > 0) {
        held.push_back(static_cast<int64_t>(record.uncompressed_size));
      }
    }
    std::vector<int64_t> needed = storage_bytes;
    std::sort(held.begin(), held.end());
    std::sort(needed.begin(), needed.end());
    if (held == needed) return;
    // For the message: a storage without a record of its size (the one that would be read past its
    // data), else a record without a storage of its size.
    std::vector<int64_t> missing, extra;
    std::set_difference(needed.begin(), needed.end(), held.begin(), held.end(), std::back_inserter(missing));
    std::set_difference(held.begin(), held.end(), needed.begin(), needed.end(), std::back_inserter(extra));
    const std::string what =
        !missing.empty() ? "a storage of " + std::to_string(missing.front()) + " bytes has no data record of that size"
                         : "a data record of " + std::to_string(extra.front()) + " bytes belongs to no storage";
    throw Error(::bitrobust::detail::concat(file, ": its ", needed.size(), " tensor storages do not match its ",
                                            held.size(), " data records (", what, "; damaged file)"));
  }
};

// Calls fn(name, tensor) for every tensor of a module archive and its submodule archives, named as
// Module::named_parameters names them ("conv1.weight").
template <typename Fn>
void for_each_archive_tensor(torch::serialize::InputArchive& archive, const std::string& prefix, const Fn& fn) {
  for (const std::string& key : archive.keys()) {
    at::Tensor t;
    torch::serialize::InputArchive child;
    if (archive.try_read(key, t)) {
      fn(prefix + key, t);
    } else if (archive.try_read(key, child)) {
      for_each_archive_tensor(child, prefix + key + ".", fn);
    }
  }
}

void check_finite(const at::Tensor& t, const std::string& file, const std::string& what) {
  if (!t.defined() || !at::isFloatingType(t.scalar_type()) || t.numel() == 0) return;
  // One reduction for both checks (it also runs after every training epoch): min and max propagate
  // NaN, and hold any infinity.
  const auto [lowest, highest] = at::aminmax(t);
  const double low = lowest.item<double>(), high = highest.item<double>();
  BR_CHECK(std::isfinite(low) && std::isfinite(high), file, ": ", what, " holds NaN or infinite values");
  const double largest = std::max(-low, high);
  BR_CHECK(largest <= kernels::kMaxQuantMagnitude, file, ": ", what, " holds values beyond ±1e30 (largest magnitude ",
           largest, ")");
}
// The metadata fields later code reads, with the types it reads them as: a file edited by hand gets
// one error naming the file and the field, not a JSON library message.
void check_metadata_types(const nlohmann::json& meta, const std::string& file) {
  BR_CHECK(meta.is_object(), file, ": metadata is not a JSON object");
  BR_CHECK(meta.contains("spec") && meta["spec"].is_object(), file, ": metadata has no model description");
  for (const char* key : {"dataset", "cifar_protocol", "augment", "quantized_by", "device", "train_data"}) {
    BR_CHECK(!meta.contains(key) || meta[key].is_string(), file, ": metadata field '", key, "' must be a string, got ",
             meta[key].dump());
  }
  // (`test` and `eval` take the protocol the model was trained with: an unknown one would be read
  // as holdout by some and refused by others)
  const std::vector<std::string> protocols = data::cifar10_protocols();
  BR_CHECK(!meta.contains("cifar_protocol") ||
               std::find(protocols.begin(), protocols.end(), meta["cifar_protocol"].get<std::string>()) != protocols.end(),
           file, ": metadata field 'cifar_protocol' must be holdout, jpeg or official, got ", meta["cifar_protocol"].dump());
  // A protocol of batches 1-5 on another data set's model says it was trained on CIFAR-10. (Models
  // of other data sets written before commit 42f9282 record holdout, the default then: accepted.)
  BR_CHECK(!meta.contains("cifar_protocol") || meta["cifar_protocol"] == "holdout" ||
               meta.value("dataset", std::string()) == "cifar10",
           file, ": metadata field 'cifar_protocol' is ", meta["cifar_protocol"].dump(), ", but the model's data set is ",
           meta.value("dataset", std::string("not named")), ", not cifar10");
  // The training images' fingerprint, compared with a checkpoint's and shown by `info`: Crc32::text().
  if (meta.contains("train_data")) {
    const std::string fingerprint = meta["train_data"].get<std::string>();
    const bool crc = fingerprint.size() == 14 && fingerprint.rfind("crc32 ", 0) == 0 &&
                     fingerprint.find_first_not_of("0123456789abcdef", 6) == std::string::npos;
    BR_CHECK(crc, file, ": metadata field 'train_data' must be a fingerprint 'crc32 ' and 8 hex digits, got ",
             meta["train_data"].dump());
  }
  BR_CHECK(!meta.contains("quantized_by") || meta["quantized_by"] == "training" || meta["quantized_by"] == "quantize",
           file, ": metadata field 'quantized_by' must be training or quantize, got ", meta["quantized_by"].dump());
  // Values shown or compared later: an error rate outside [0, 1] or a negative step count would be
  // printed as if it were a result.
  const auto check_number = [&](const nlohmann::json& object, const char* key, const std::string& label, double lo,
                                double hi, bool integer) {
    if (!object.contains(key) || object[key].is_null()) return;
    const nlohmann::json& v = object[key];
    const bool ok = (integer ? v.is_number_integer() : v.is_number()) && v.get<double>() >= lo && v.get<double>() <= hi;
    BR_CHECK(ok, file, ": metadata field '", label, "' must be ", integer ? "an integer" : "a number", " in [", lo, ", ",
             hi, "], got ", v.dump());
  };
  const double kMany = 9.2e18;  // (int64's range, as a double)
  check_number(meta, "test_error", "test_error", 0, 1, false);
  check_number(meta, "float_test_error", "float_test_error", 0, 1, false);
  check_number(meta, "epochs", "epochs", 1, kMany, true);
  check_number(meta, "steps", "steps", 0, kMany, true);
  check_number(meta, "batch", "batch", 1, kMany, true);
  check_number(meta, "seed", "seed", 0, 1.9e19, true);
  check_number(meta, "lr", "lr", 0, 1e30, false);
  check_number(meta, "momentum", "momentum", 0, 1, false);
  check_number(meta, "weight_decay", "weight_decay", 0, 1e30, false);
  check_number(meta, "train_seconds", "train_seconds", 0, 1e30, false);
  check_number(meta, "threads", "threads", 1, kMany, true);
  if (meta.contains("randbet")) {
    const nlohmann::json& r = meta["randbet"];
    BR_CHECK(r.is_object(), file, ": metadata field 'randbet' must be an object, got ", r.dump());
    check_number(r, "rate", "randbet.rate", 0, 1, false);
    check_number(r, "perturbed_steps", "randbet.perturbed_steps", 0, kMany, true);
    for (const char* key : {"mode", "curriculum", "error_model"}) {
      BR_CHECK(!r.contains(key) || r[key].is_string(), file, ": metadata field 'randbet.", key,
               "' must be a string, got ", r[key].dump());
    }
  }
  if (!meta.contains("quantization")) return;
  const nlohmann::json& q = meta["quantization"];
  BR_CHECK(q.is_object() && q.contains("scheme") && q["scheme"].is_string() && q.contains("params") &&
               q["params"].is_array(),
           file, ": metadata field 'quantization' must be an object with a 'scheme' string and a 'params' list");
  for (const nlohmann::json& p : q["params"]) {
    BR_CHECK(p.is_object() && p.contains("name") && p["name"].is_string() &&
                 (!p.contains("channels") || p["channels"].is_number_integer()) &&
                 (!p.contains("bits") || p["bits"].is_number_integer()),
             file, ": quantized parameter entry ", p.dump(), " needs a 'name' string (and 'channels' and 'bits' "
             "integers)");
  }
  BR_CHECK(!q.contains("weights") || q["weights"].is_number_integer(), file,
           ": metadata field 'quantization.weights' must be an integer, got ", q["weights"].dump());
  for (const char* key : {"include", "exclude"}) {
    if (!q.contains(key)) continue;
    bool strings = q[key].is_array();
    for (const nlohmann::json& g : q[key]) strings = strings && g.is_string();
    BR_CHECK(strings, file, ": metadata field 'quantization.", key, "' must be a list of strings");
  }
}

}  // namespace

CheckedArchive read_archive_checked(const std::string& path, const std::string& what) {
  CheckedArchive checked{read_file_bytes(path, what), {}};
  // NOTE [Record checksums]: before LibTorch reads any record, which it does not check.
  checked.records = verify_zip_checksums(checked.file);
  // NOTE [Archive code records], NOTE [Archive pickles]. BITROBUST_TRUST_ARCHIVES=1 skips them (the
  // checksums stay): for an archive of a Torch version whose writer they do not know yet.
  const char* trust = std::getenv("BITROBUST_TRUST_ARCHIVES");
  const std::string trusted = trust == nullptr ? "" : trust;
  BR_CHECK(trusted.empty() || trusted == "0" || trusted == "1", "BITROBUST_TRUST_ARCHIVES must be 1 (skip the checks) or 0 ",
           "(check; the default), got '", trusted, "'");
  if (trusted != "1") check_archive_records(checked.file, checked.records);
  return checked;
}

void load_checked_archive(torch::serialize::InputArchive& archive, const CheckedArchive& checked, at::Device device) {
  try {
    archive.load_from(checked.file.bytes.data(), checked.file.bytes.size(), device);
  } catch (const std::exception&) {  // c10::Error, and TorchScript's own errors for damaged code records
    throw Error(checked.file.name + " is not a readable archive (truncated, damaged or not written by bitrobust)");
  }
  StorageTally tally;  // NOTE [Damaged model files], before any tensor's values are read
  tally.file = checked.file.name;
  for_each_archive_tensor(archive, "", [&tally](const std::string& name, const at::Tensor& t) { tally.add(t, name); });
  tally.check_against_records(checked.records);
}

void load_archive_checked(torch::serialize::InputArchive& archive, const std::string& path, const std::string& what,
                          at::Device device) {
  load_checked_archive(archive, read_archive_checked(path, what), device);
}

void check_finite_module(const torch::nn::Module& net, const std::string& file) {
  for (const auto& p : net.named_parameters()) check_finite(p.value(), file, "parameter " + p.key());
  for (const auto& b : net.named_buffers()) {
    check_finite(b.value(), file, "buffer " + b.key());
    // A variance below 0, which no training writes, gives NaN at evaluation (found by a review).
    const std::string suffix = "running_var";
    const std::string& key = b.key();
    if (key.size() >= suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        b.value().numel() > 0) {
      BR_CHECK(b.value().min().item<double>() >= 0, file, ": buffer ", key, " holds a negative variance (damaged or edited file)");
    }
  }
}

// NOTE [Shapes after load]: Module::load reads each tensor with InputArchive::read, which set_()s
// the module's tensor to the stored one: shape and dtype come from the file. A model description
// edited by hand (or weights of another architecture) would then run with layers whose shapes
// disagree with the description, without an error, and compute garbage.
void load_module_checked(torch::nn::Module& net, torch::serialize::InputArchive& archive, const std::string& file) {
  struct Expected {
    std::string what;
    std::vector<int64_t> shape;
    at::ScalarType dtype;
  };
  std::vector<Expected> expected;
  std::set<std::string> names;
  for (const auto& p : net.named_parameters()) {
    expected.push_back({"parameter " + p.key(), p.value().sizes().vec(), p.value().scalar_type()});
    names.insert(p.key());
  }
  for (const auto& b : net.named_buffers()) {
    expected.push_back({"buffer " + b.key(), b.value().sizes().vec(), b.value().scalar_type()});
    names.insert(b.key());
  }
  // Tensors the described network lacks would be skipped (a layer dropped from the description).
  for_each_archive_tensor(archive, "", [&](const std::string& name, const at::Tensor& t) {
    BR_CHECK(!t.defined() || names.count(name) > 0, file, ": the weights hold ", name,
             ", which the network of the model description does not have (the weights belong to another network, "
             "or the file was edited)");
  });
  net.load(archive);
  std::vector<at::Tensor> loaded;
  for (const auto& p : net.named_parameters()) loaded.push_back(p.value());
  for (const auto& b : net.named_buffers()) loaded.push_back(b.value());
  for (size_t i = 0; i < loaded.size(); ++i) {  // (load keeps the module's tensors: the same list, in order)
    BR_CHECK(loaded[i].sizes().vec() == expected[i].shape && loaded[i].scalar_type() == expected[i].dtype, file, ": ",
             expected[i].what, " is stored as ", at::toString(loaded[i].scalar_type()), " ", loaded[i].sizes(),
             " but the model description makes it ", at::toString(expected[i].dtype), " ",
             at::IntArrayRef(expected[i].shape), " (the weights belong to another network, or the file was edited)");
  }
}

nlohmann::json version_info() {
  return {{"bitrobust", BITROBUST_VERSION},
          {"torch", TORCH_VERSION},
#ifdef BITROBUST_WITH_CUDA
          {"cuda_kernels", true},
#else
          {"cuda_kernels", false},
#endif
          {"cpu", to_json(this_cpu())}};
}

void save_model_file(const std::string& path, const ModelFile& file, const std::vector<report::TextOutput>& texts,
                     const std::string& what) {
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
  archive.write("meta", c10::IValue(meta.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
  archive.write("model", model_archive);
  if (!file.quant_codes.empty()) {
    for (size_t i = 0; i < file.quant_codes.size(); ++i) {
      codes_archive.write("p" + std::to_string(i), file.quant_codes[i].cpu(), /*is_buffer=*/true);
      ranges_archive.write("p" + std::to_string(i), file.quant_ranges[i].cpu(), /*is_buffer=*/true);
    }
    archive.write("quant_codes", codes_archive);
    archive.write("quant_ranges", ranges_archive);
  }
  save_archive_atomic(archive, path, what, texts);
}

void save_archive_atomic(torch::serialize::OutputArchive& archive, const std::string& path, const std::string& what,
                         const std::vector<report::TextOutput>& texts) {
  const std::string tmp = report::create_temp_file_for(path, what);
  std::optional<report::StagedTexts> staged;
  try {
    // Through a writer function, not save_to(tmp): the archive's folder is then "archive" (as in
    // PyTorch's torch.save), not the temporary file's name, so the bytes do not depend on where the
    // file is saved, and the same model saved twice gives the same file.
    // A failed write is reported after save_to returns: a writer function returning less than asked
    // makes LibTorch throw, and throw again from its writer's destructor (std::terminate).
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    archive.save_to([&out](const void* data, size_t size) -> size_t {
      if (out) out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
      return size;
    });
    out.close();
    BR_CHECK(out, "cannot write ", what, " ", path, ": writing ", tmp, " failed (disk full?)");
    report::sync_temp_file(tmp, path, what);
    staged.emplace(texts);
    staged->write_special_outputs(true);  // before any file is replaced (StagedTexts::commit)
  } catch (const c10::Error& e) {
    report::discard_temp_file(tmp);
    throw Error("cannot write " + what + " " + path + ": " + torch_error_text(e.what_without_backtrace()));
  } catch (...) {
    report::discard_temp_file(tmp);
    throw;
  }
  report::commit_temp_file(tmp, path, what);  // on failure `staged` removes the texts' temporaries
  staged->commit();
}

ArchiveKind archive_kind(const std::string& path, std::string* why) {
  const auto other = [why](const std::string& reason) {
    if (why != nullptr) *why = reason;
    return ArchiveKind::Other;
  };
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return ArchiveKind::Missing;
  if (!std::filesystem::is_regular_file(path, ec)) return other("it is not a regular file");
  try {
    torch::serialize::InputArchive archive;
    load_archive_checked(archive, path, "file", at::Device(at::kCPU));
    const std::vector<std::string> keys = archive.keys();
    const auto has = [&keys](const char* key) { return std::find(keys.begin(), keys.end(), key) != keys.end(); };
    if (has("bitrobust_format")) return ArchiveKind::ModelFile;
    if (has("optimizer") && has("epochs_done")) return ArchiveKind::Checkpoint;
    return other("it is a Torch archive without a checkpoint's records");
  } catch (const std::exception& e) {
    return other(e.what());
  }
}

ModelFile load_model_file(const std::string& path) {
  ModelFile file;
  torch::serialize::InputArchive archive;
  load_archive_checked(archive, path, "model file", at::Device(at::kCPU));
  c10::IValue meta_value;
  at::Tensor version;
  if (!archive.try_read("bitrobust_format", version) || !archive.try_read("meta", meta_value) ||
      !meta_value.isString()) {
    torch::serialize::InputArchive optimizer;
    BR_CHECK(!archive.try_read("optimizer", optimizer), "model file ", path, " is a training checkpoint (what `train "
             "--resume` continues from), not a model file: give the model file `train --out` wrote");
    throw Error("model file " + path + " is a Torch archive but not a bitrobust model (no bitrobust_format/meta)");
  }
  BR_CHECK(version.numel() == 1 && version.scalar_type() == at::kLong && version.item<int64_t>() >= 1,
           "model file ", path, ": bad format version record");
  BR_CHECK(version.item<int64_t>() <= kFormatVersion, "model file ", path, " has format version ",
           version.item<int64_t>(), "; this bitrobust reads up to ", kFormatVersion);
  try {
    file.meta = nlohmann::json::parse(meta_value.toStringRef());
  } catch (const nlohmann::json::exception& e) {
    throw Error("model file " + path + ": corrupt metadata: " + json_error_text(e.what()));
  }
  check_metadata_types(file.meta, "model file " + path);
  try {
    file.spec = models::ModelSpec::from_json(file.meta["spec"]);
  } catch (const Error& e) {
    throw Error("model file " + path + ": " + e.what());
  }
  file.net = models::build_model(file.spec);
  file.path = path;
  try {
    torch::serialize::InputArchive model_archive;
    archive.read("model", model_archive);
    load_module_checked(*file.net, model_archive, "model file " + path);
    if (!file.meta.contains("quantization")) {
      // Codes without their description would be ignored: the file would run as its float weights.
      torch::serialize::InputArchive codes_archive;
      BR_CHECK(!archive.try_read("quant_codes", codes_archive), "model file ", path,
               " stores quantized codes but its metadata has no 'quantization' description (edited or damaged file)");
    } else {
      torch::serialize::InputArchive codes_archive, ranges_archive;
      archive.read("quant_codes", codes_archive);
      archive.read("quant_ranges", ranges_archive);
      const size_t count = file.meta["quantization"]["params"].size();
      BR_CHECK(codes_archive.keys().size() == count && ranges_archive.keys().size() == count, "model file ", path,
               ": metadata describes ", count, " quantized parameters but the file stores ",
               codes_archive.keys().size(), " code and ", ranges_archive.keys().size(), " range tensors");
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
                torch_error_text(e.what_without_backtrace()).substr(0, 200) + ")");
  } catch (const Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {  // TorchScript's own (ObjectAttributeError): see load_checkpoint
    throw Error("model file " + path + ": weights do not match the model description (" +
                std::string(e.what()).substr(0, 200) + ")");
  }
  check_finite_module(*file.net, "model file " + path);
  return file;
}

}  // namespace bitrobust::io
