#pragma once
// The bit error benchmark: robust test error (RErr) of a quantized network over many seeded bit
// error patterns per rate. See NOTE [RErr protocol] in bit_error_eval.cpp.
#include <ATen/core/Tensor.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bitrobust/bits/bit_errors.h"
#include "bitrobust/bits/pattern.h"
#include "bitrobust/data/dataset.h"
#include "bitrobust/models/models.h"
#include "bitrobust/quant/model_quantization.h"

namespace bitrobust::eval {

struct SweepOptions {
  std::vector<double> rates;          ///< bit error rates in [0, 1]
  int64_t patterns = 50;              ///< seeds seed, seed+1, ..., seed+patterns-1 (one "chip" each)
  uint64_t seed = 100;
  std::string error_model = "random"; ///< bits::ErrorModel name: random | msb | lsb<k> | stuck_at_0 | stuck_at_1
  std::string layers;                 ///< regular expression of parameter names hit by errors ("" = all)
  int64_t batch_size = 500;
  bool progress = true;
};

/// Summary of one rate over all patterns (fractions in [0, 1]).
struct RateResult {
  double rate = 0;
  std::vector<double> rerr;             ///< per pattern, in seed order
  std::vector<double> perturbed_error;  ///< per pattern: the perturbed model's own error
  std::vector<int64_t> bits_changed;    ///< per pattern
  double rerr_mean = 0, rerr_std = 0, rerr_min = 0, rerr_max = 0;
  double rerr_ci95_low = 0, rerr_ci95_high = 0;  ///< Student-t interval of the mean
  double perturbed_error_mean = 0;
};

struct SweepResult {
  double clean_error = 0;
  int64_t examples = 0;
  std::vector<RateResult> results;
  double seconds = 0;
  int64_t perturbed_passes = 0;           ///< patterns × rates that changed bits: passes over the images
  double images_patterns_per_second = 0;  ///< test images × perturbed_passes per second
};

/// Runs the sweep. The network's selected parameters are overwritten with dequantized perturbed
/// codes during the run and hold the clean quantized weights afterwards.
SweepResult run_sweep(models::Classifier& net, const quant::QuantizedModel& q, const data::Dataset& test,
                      const SweepOptions& options);

/// "crc32 <8 hex digits>" of what a sweep evaluates, whatever the file is called: every quantized
/// tensor's codes and ranges (in q's order), then the network's other parameters and all its
/// buffers (in registration order), each as its bytes on the CPU. The float weights q's codes
/// replace are left out: they are not evaluated. Read before the network is moved or cast.
std::string model_fingerprint(const torch::nn::Module& net, const quant::QuantizedModel& q);

/// q's clean codes, each with a preallocated output for its perturbed copy (param_index = position in q).
std::vector<bits::CodeTensor> perturbable_codes(const quant::QuantizedModel& q);
/// q's tensors (formats, ranges) with the codes replaced by the perturbed outputs of `codes`
/// (perturbable_codes(q)): what QuantizedModel::load_weights writes into the network.
std::vector<quant::QuantizedTensor> with_perturbed_codes(const quant::QuantizedModel& q,
                                                         const std::vector<bits::CodeTensor>& codes);

/// The shapes and code widths of q's parameters, as bit error patterns describe a model.
std::vector<bits::ParamSpec> param_specs(const quant::QuantizedModel& q);

struct PatternResult {
  double clean_error = 0, perturbed_error = 0, rerr = 0;
  int64_t bits_changed = 0;
};
/// Evaluates one explicit pattern (e.g. loaded from a file): the replay of a sweep's (seed, rate).
/// Throws bitrobust::Error if the pattern was not made for q's shapes and bit widths.
PatternResult evaluate_pattern(models::Classifier& net, const quant::QuantizedModel& q, const data::Dataset& test,
                               const bits::BitPattern& pattern, int64_t batch_size);

/// Mean, sample standard deviation, min, max and the 95% confidence interval of the mean.
void summarize(RateResult& r);

/// Sample mean, standard deviation and the 95% interval of the mean (Student t) of `values`; with
/// one value the spread is undefined: std 0 and the interval [mean, mean].
struct MeanInterval {
  double mean = 0, std = 0, low = 0, high = 0;
};
MeanInterval mean_interval(const std::vector<double>& values);

/// Parses "0.01%,0.1%,1%" or "0.0001,0.001" (fractions, or percentages with '%'); each in [0, 1].
/// `option` names the input in errors; `entries`, if given, receives each rate as written (trimmed).
std::vector<double> parse_rates(const std::string& text, const std::string& option = "--rates",
                                std::vector<std::string>* entries = nullptr);

}  // namespace bitrobust::eval
