#pragma once
// NOTE [Model file]: one self-describing file per model, a torch::serialize archive (loads in
// PyTorch with torch.jit.load) holding
//   "bitrobust_format"  int tensor, the format version (1)
//   "meta"              a JSON string: {"spec": ModelSpec, "dataset", "epochs", "seed", "test_error",
//                       "versions", "quantization": {...} (if quantized), ...}
//   "model"             the network's parameters and buffers (float master weights)
//   "quant_codes"       (quantized models) one archive entry per quantized parameter, in the order of
//   "quant_ranges"      meta.quantization.params: integer codes and float [channels, 2] ranges
#include <ATen/core/Tensor.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <nlohmann/json.hpp>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bitrobust/io/zip_checksums.h"
#include "bitrobust/report/output.h"
#include "bitrobust/models/models.h"

namespace bitrobust::io {

struct ModelFile {
  std::string path;  ///< where it was loaded from (for messages); empty for a model made in memory
  models::ModelSpec spec;
  std::shared_ptr<models::Classifier> net;
  nlohmann::json meta = nlohmann::json::object();
  std::vector<at::Tensor> quant_codes;   ///< parallel to meta["quantization"]["params"]
  std::vector<at::Tensor> quant_ranges;
};

/// Writes atomically: a temporary file next to `path`, renamed over it once complete. `texts`
/// (report::TextOutput; "" paths skipped) are written as one with it: the model file is renamed into
/// place only once every text is in its temporary file, so a run's --json and its model file are
/// both written or neither. `what` names the file in errors ("model file (--out)").
void save_model_file(const std::string& path, const ModelFile& file, const std::vector<report::TextOutput>& texts = {},
                     const std::string& what = "model file");

/// Writes a Torch archive atomically through a uniquely named temporary file next to `path`
/// (report::create_temp_file_for); `what` names it in errors ("model file", "checkpoint"). `texts`:
/// as in save_model_file.
void save_archive_atomic(torch::serialize::OutputArchive& archive, const std::string& path, const std::string& what,
                         const std::vector<report::TextOutput>& texts = {});

/// What is at `path`, for writers about to replace it with something else (a checkpoint): nothing,
/// a bitrobust model file (an archive that loads, with a bitrobust_format record), a training
/// checkpoint (one with optimizer and epochs_done records), or anything else (any other file, a
/// damaged archive, a folder). For Other, `why` (if given) receives the reason: the load's error,
/// or what the file is.
enum class ArchiveKind { Missing, ModelFile, Checkpoint, Other };
ArchiveKind archive_kind(const std::string& path, std::string* why = nullptr);

/// Reads a model file; errors name the file and what is wrong (missing, not a bitrobust model, a
/// tensor whose stored data is shorter than its shape, NaN or infinite weights, ...).
ModelFile load_model_file(const std::string& path);

/// A Torch archive (a model file, a checkpoint) read once and checked before LibTorch parses any of
/// it: it exists, every record matches its checksum (NOTE [Record checksums]) and holds only what an
/// archive of tensors holds (NOTE [Archive code records], NOTE [Archive pickles]). Errors read
/// "<what> <path> ...".
struct CheckedArchive {
  FileBytes file;
  std::vector<ZipRecord> records;
};
CheckedArchive read_archive_checked(const std::string& path, const std::string& what);

/// Loads a checked archive's bytes onto `device`, then checks that its data records hold every byte
/// its tensors need (NOTE [Damaged model files]), before any value is used. One CheckedArchive can
/// be loaded more than once (onto the CPU, then a GPU): every load is of the bytes checked.
void load_checked_archive(torch::serialize::InputArchive& archive, const CheckedArchive& checked, at::Device device);

/// read_archive_checked, then load_checked_archive.
void load_archive_checked(torch::serialize::InputArchive& archive, const std::string& path, const std::string& what,
                          at::Device device);
/// Throws bitrobust::Error "<file>: parameter NAME holds NaN or infinite values" (or buffer NAME), or
/// "... holds values beyond ±1e30" (README: the limit of weights in model files).
void check_finite_module(const torch::nn::Module& net, const std::string& file);
/// net->load(archive), and then a check that every parameter and buffer kept the shape and dtype
/// the network was built with: LibTorch replaces each tensor by the stored one, whatever its shape,
/// so weights of another architecture would load without an error (NOTE [Shapes after load]).
void load_module_checked(torch::nn::Module& net, torch::serialize::InputArchive& archive, const std::string& file);

/// Versions of bitrobust and Torch, and the CPU and its kernels (`cpu`: cpu_description.h), recorded
/// in every result.
nlohmann::json version_info();

}  // namespace bitrobust::io
