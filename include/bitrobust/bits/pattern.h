#pragma once
// Explicit bit error patterns: drawn (the same bits inject_bit_errors changes), saved to and loaded
// from a text file (format in docs/bit_errors.md, "Pattern files"), and replayed.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bitrobust/bits/bit_error_sampler.h"
#include "bitrobust/bits/bit_errors.h"

namespace bitrobust::bits {

/// One selected bit. kind is value-independent (NOTE [Bit error sampling]): Flip inverts the bit,
/// Set0 / Set1 force it (a bit already at that value is unchanged).
struct BitFlip {
  int64_t param = 0;    ///< parameter index
  int64_t element = 0;  ///< flat (row-major) element index in the parameter
  int32_t bit = 0;      ///< bit position, 0 = LSB (NOTE [Bit numbering] in bitops.h)
  FlipKind kind = FlipKind::Flip;
  bool operator==(const BitFlip& o) const {
    return param == o.param && element == o.element && bit == o.bit && kind == o.kind;
  }
};

/// What a pattern was drawn for, per parameter: its shape and code width (the model fingerprint).
struct ParamSpec {
  std::string name;              ///< optional (no whitespace); compared only when both sides have one
  std::vector<int64_t> shape;
  int bits = 8;
  int64_t numel() const;
  std::string to_string() const;  ///< e.g. "conv1.weight [64, 3, 3, 3] 8 bits"
};

/// A shape as pattern files (and `bitrobust info`) write it: "64x3x3x3", or "scalar".
std::string shape_text(const std::vector<int64_t>& shape);

struct BitPattern {
  uint64_t seed = 0;
  ErrorModel model;
  std::vector<ParamSpec> params;  ///< parameter i has param index i
  std::vector<BitFlip> flips;     ///< sorted by (param, element, bit); no duplicates
  /// The --layers regular expression the pattern was drawn with ("" = every parameter): flips lie
  /// only in parameters it selects.
  std::string layers;
  /// False for a version 1 file, which did not record the layers (`layers` is then "", unknown).
  bool layers_recorded = true;
};

/// Whether the pattern's flips are those its seed and error model draw: in the parameters its
/// layers select (or, where the file did not record them, in each parameter all or none of them).
/// False for an edited or hand-made file. Costs one draw, O(selected bits).
bool drawn_by_its_header(const BitPattern& pattern);

/// The bits that inject_bit_errors(codes, bits, model, seed, param_index, out) selects for a tensor
/// of numel elements, sorted by (element, bit). Applying them with apply_pattern gives exactly the
/// output of inject_bit_errors, for every error model.
std::vector<BitFlip> draw_pattern(int64_t numel, int bits, const ErrorModel& model, uint64_t seed,
                                  int64_t param_index);

/// A whole model's pattern: parameter i (param index i) gets errors only if selector selects its name.
BitPattern draw_pattern(const std::vector<ParamSpec>& params, const ErrorModel& model, uint64_t seed,
                        const ParamSelector& selector = ParamSelector());

/// Writes the pattern (format: docs/bit_errors.md). Error if the file cannot be written or a name
/// contains whitespace; `what` names the file in errors ("pattern file (--out)").
void save_pattern(const std::string& path, const BitPattern& pattern, const std::string& what = "pattern file");

/// Reads a pattern; Error for a malformed file (with its line number), a flip outside its
/// parameter's elements or bits, or duplicate flips.
BitPattern load_pattern(const std::string& path);

/// Reads a pattern and checks that it was made for `expected` (same number of parameters, and per
/// parameter the same shape, bit width and, where both have one, name); Error naming the first
/// mismatch otherwise.
BitPattern load_pattern(const std::string& path, const std::vector<ParamSpec>& expected);

/// Error naming the first difference if `pattern` was not made for `expected`.
void check_pattern_fits(const BitPattern& pattern, const std::vector<ParamSpec>& expected);

/// Writes clean with the flips of parameter `param_index` applied into out (same shape, dtype, device,
/// contiguous; may be clean itself). Returns the number of bits changed. Error if a flip lies outside
/// the tensor or the m bits, or if one bit is listed twice (CUDA applies the list in no fixed order).
int64_t apply_pattern(const std::vector<BitFlip>& flips, int64_t param_index, const at::Tensor& clean, int bits,
                      at::Tensor& out);

/// Applies a whole pattern to tensors[i] = parameter index tensors[i].param_index; checks shapes and
/// bit widths against pattern.params first. Returns the number of bits changed.
int64_t apply_pattern(const BitPattern& pattern, const std::vector<CodeTensor>& tensors);

}  // namespace bitrobust::bits
