#pragma once
// The CLI's subcommands: each file registers one on the CLI11 app and runs it.
#include <CLI/CLI.hpp>

#include <ATen/core/Tensor.h>
#include <functional>
#include <limits>
#include <string>

#include "bitrobust/bits/bit_errors.h"
#include "bitrobust/data/dataset.h"
#include "bitrobust/io/model_file.h"
#include "bitrobust/models/models.h"
#include "bitrobust/quant/quantizer.h"
#include "bitrobust/quant/scheme.h"
#include "bitrobust/report/output.h"

namespace bitrobust::cli {

/// Accepts a whole decimal integer in [min, max] (CLI11's own number checks print a 309-digit
/// range, and its conversion saturates values too large for the type instead of refusing them).
CLI::Validator integer_in(int64_t min, int64_t max = std::numeric_limits<int64_t>::max());
/// Accepts a finite decimal number in the interval from min to max, each end open or closed, so
/// that a value out of range is a command-line error (status 2) as an integer out of range is.
CLI::Validator decimal_in(double min, double max, bool open_min, bool open_max);

/// Options every subcommand shares.
struct CommonOptions {
  std::string device = "cpu";
  int threads = 0;         ///< 0 = all cores
  std::string json;        ///< result file ("" = none)
  bool quiet = false;
};

void add_common_options(CLI::App& cmd, CommonOptions& common);
/// Applies --threads and checks --device; returns the torch device.
at::Device setup_runtime(const CommonOptions& common);

/// Data set options shared by train, test, eval.
struct DataOptions {
  std::string dataset;
  std::string root;
  std::string protocol;  ///< CIFAR-10 protocol; "" = not given: the model file's, else holdout
};
/// `for_training`: --dataset is required, and --cifar-protocol has no model file to default to.
void add_data_options(CLI::App& cmd, DataOptions& data, bool for_training);
/// Throws bitrobust::Error if --cifar-protocol was given for a data set other than CIFAR-10.
void check_cifar_protocol_applies(const DataOptions& options);
data::Dataset load_data(const DataOptions& options, const std::string& split, at::Device device);
/// "" for MNIST and Fashion-MNIST; for CIFAR-10 "; <protocol> protocol", and for holdout which
/// training batches the split is (its "test" set is training batch 5: said wherever an error is).
std::string protocol_note(const data::Dataset& data, const DataOptions& options);
/// The CIFAR-10 protocol results record for these images ("" for other data sets, which have none).
std::string recorded_protocol(const data::Dataset& data, const DataOptions& options);
/// The layout `net`'s activations take when it evaluates `data` on `device` (bf16: a network run
/// in bfloat16), as results record it: "channels_last" or "nchw" (models::infers_channels_last).
std::string activation_layout(const models::Classifier& net, const data::Dataset& data, at::Device device,
                              bool bf16 = false);
/// Throws bitrobust::Error if an output is one of the files a data set was read from.
void check_outputs_spare_data(const std::vector<report::NamedPath>& outputs, const data::Dataset& data);
/// The data a saved model is evaluated on: the data set (and CIFAR-10 protocol) named in the model
/// file unless the options say otherwise, its first `limit` examples (0 = all); checks that the
/// model's input shape and class count fit the data. `options` is updated to what was loaded.
data::Dataset load_data_for_model(const io::ModelFile& file, const std::string& model_path, DataOptions& options,
                                  const std::string& split, int64_t limit, at::Device device);

/// The error model `name` at `rate` (ErrorModel::parse); an error names `option`, the option it came from.
bits::ErrorModel parse_error_model_option(const std::string& name, double rate, const char* option);
/// eval::parse_rates, with a note on stderr for each rate of 50% or more written as a fraction
/// ("--randbet 1" is 100%: every bit flips; "1%" was likely meant).
std::vector<double> parse_rates_option(const std::string& text, const std::string& option);
/// Throws bitrobust::Error "<option> <model>: ..." if the error model needs more bits than codes of
/// one of these widths have (lsb9 on 8-bit codes): the option's fault, not the model file's.
void check_error_model_fits(const bits::ErrorModel& model, const std::vector<int>& code_bits, const char* option);

/// Quantization options shared by train and quantize: a preset (--scheme normal|rquant with
/// --bits and --clip) or an explicit scheme string (--scheme u8-asym-tensor-round-clip0.1).
struct QuantOptions {
  std::string scheme;
  int bits = 0;
  float clip = 0;
  std::vector<std::string> include, exclude;
  bool requested() const { return !scheme.empty() || bits != 0 || clip != 0; }
  quant::QuantScheme build_scheme() const;
  quant::ParamSelector selector() const { return {include, exclude}; }
};
void add_quant_options(CLI::App& cmd, QuantOptions& q);

/// Writes the model file `out` and the --json `summary` (json_path "" = none) as one: both or
/// neither. A --json that is a pipe or device (`--json /dev/stdout`) is written after `announce`
/// prints the result line, as every command prints its result before its JSON.
void save_model_and_json(const std::string& out, const io::ModelFile& file, const std::string& json_path,
                         const nlohmann::json& summary, const std::function<void()>& announce);

/// Saves a network's parameters and puts them back (e.g. around evaluating quantized weights).
class WeightBackup {
 public:
  explicit WeightBackup(models::Classifier& net);
  void restore() const;

 private:
  std::vector<at::Tensor> params_, saved_;
};

using Runner = std::function<int()>;
Runner register_train(CLI::App& app);
Runner register_test(CLI::App& app);
Runner register_quantize(CLI::App& app);
Runner register_export(CLI::App& app);
Runner register_eval(CLI::App& app);
Runner register_compare(CLI::App& app);
Runner register_pattern(CLI::App& app);
Runner register_info(CLI::App& app);

}  // namespace bitrobust::cli
