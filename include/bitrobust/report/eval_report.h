#pragma once
// Reports of the bit error benchmark: JSON (schema in README.md), CSV, terminal tables and SVG plots.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bitrobust/eval/bit_error_eval.h"

namespace bitrobust::report {

/// What a sweep was run on, recorded next to its numbers.
struct SweepContext {
  std::string model, model_name, scheme, error_model, layers, dataset, split, cifar_protocol, device;
  std::string precision = "fp32";  ///< eval/precision.h
  /// The activations' memory layout in inference: "channels_last" or "nchw"
  /// (models::infers_channels_last); results of the two agree to rounding.
  std::string activations = "nchw";
  int64_t limit = 0, batch = 0;
  /// Where a seed's bits fall: the quantized parameters' shapes and bit widths (layout_of).
  std::string layout;
  /// Which images: data::Dataset::fingerprint() of the examples evaluated.
  std::string data;
  /// Which weights: eval::model_fingerprint of the model evaluated, and the seed it was trained
  /// with (from the model file's metadata; null when it records none).
  std::string model_fingerprint;
  nlohmann::json model_seed;
};
/// A short fingerprint of the quantized parameters' shapes and bit widths, in order: "<count>
/// tensors, <bits> bits, crc32 <hex>". Two sweeps with the same seeds met the same bits only if
/// their layouts are equal (NOTE [Paired comparison]).
std::string layout_of(const std::vector<std::vector<int64_t>>& shapes, const std::vector<int>& bits);

nlohmann::json sweep_to_json(const eval::SweepResult& sweep, const eval::SweepOptions& options, const SweepContext& ctx);
/// Checks a result file against the documented schema; throws bitrobust::Error naming `source` and the problem.
void validate_sweep_json(const nlohmann::json& j, const std::string& source);
std::string sweep_csv(const nlohmann::json& j);
/// Table: rate, mean RErr, std, min, max (in %), with the clean error as the p = 0 row (a row of
/// its own, "clean", when rate 0 had errors in one direction, as with "random,0to1=0.02").
std::string sweep_table(const nlohmann::json& j);
/// Several results side by side: one column per model, mean RErr (%) per rate.
std::string compare_table(const std::vector<nlohmann::json>& results);
/// NOTE [Paired comparison]: a pattern depends only on (seed, parameter, element, bit) (bits/bit_errors.h),
/// so models with the same parameter shapes and bit widths, evaluated from the same seed on the same
/// images, meet the same faulty bits: the same chips. Their RErr can then be compared chip by chip,
/// which takes the spread between chips out of the comparison (two models' own intervals may overlap
/// where the paired difference's does not). Every other result against results[base]: per rate,
/// the mean difference in RErr with its 95% interval (Student t) and the number of patterns where
/// it is lower and higher; a result that did not meet the same patterns says why. "" for fewer than
/// two results.
std::string paired_table(const std::vector<nlohmann::json>& results, size_t base = 0);
/// RErr against the bit error rate (logarithmic axis), mean with min/max bars, one series per result.
std::string rerr_plot_svg(const std::vector<nlohmann::json>& results, const std::string& title);

}  // namespace bitrobust::report
