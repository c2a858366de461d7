#pragma once
// Bit error models applied to the codes of quantized tensors (see docs/bit_errors.md).
//
// Codes: uint8 tensors for m <= 8 bits, int16 tensors holding uint16 bit patterns for 9..16 bits
// (int8 and int32 accepted too); the m low bits hold the code and only those are ever changed.
// The pattern is a pure function of (seed, parameter index, element index, bit) and of the model:
// the same on CPU and CUDA, for any thread count and call order; lower rates give subsets of the
// errors of higher rates (NOTE [Bit error sampling] in bitrobust/bits/bit_error_sampler.h).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bitrobust/bits/bit_error_sampler.h"
#include "bitrobust/bits/bit_errors_kernels.h"
#include "bitrobust/common/name_regex.h"

namespace bitrobust::bits {

enum class ErrorKind {
  Random,    ///< every bit of the m bits flips with probability rate (or rate_0to1 / rate_1to0)
  Msb,       ///< like Random, on the code's most significant bit (bit m-1) only
  Lsb,       ///< like Random, on the lsb_bits least significant bits only
  StuckAt0,  ///< a fraction rate of the m bits is forced to 0
  StuckAt1,  ///< a fraction rate of the m bits is forced to 1
};

/// One bit error rate as users write it: a decimal fraction ("0.001") or a percentage ("0.1%").
/// Throws bitrobust::Error naming `option` for anything else, for values outside [0, 1] and for
/// values a double cannot hold (1e-400 is not read as 0); -0 is read as 0.
double parse_rate(const std::string& text, const std::string& option);

/// An error model: kind and rates. Names (parse / name()):
///   "random", "msb", "lsb<k>" (e.g. "lsb2"), "stuck_at_0" (or "stuck-at-0", "stuck0"), "stuck_at_1"
///   (or "stuck-at-1", "stuck1"),
/// optionally followed, for random/msb/lsb, by ",0to1=<rate>" and/or ",1to0=<rate>" for asymmetric
/// rates (a direction not given uses `rate`). Example: ErrorModel::parse("random,0to1=0.02", 0.005).
struct ErrorModel {
  ErrorKind kind = ErrorKind::Random;
  double rate = 0;
  double rate_0to1 = -1;  ///< < 0: same as rate (Random, Msb, Lsb only)
  double rate_1to0 = -1;  ///< < 0: same as rate (Random, Msb, Lsb only)
  int lsb_bits = 0;       ///< Lsb: number of least significant bits that errors may hit (>= 1)

  /// Error for an unknown name or a rate outside [0, 1].
  static ErrorModel parse(const std::string& name, double rate);
  /// The canonical name, parseable by parse(): e.g. "random", "lsb2", "msb,0to1=0.02,1to0=0.001".
  std::string name() const;
  /// For people: e.g. "random(p=0.01)", "random(p01=0.02, p10=0.005)", "stuck_at_1(p=0.001)".
  std::string to_string() const;
  /// Error if a rate is outside [0, 1] (or NaN), lsb_bits < 1 for Lsb, or rate_0to1/rate_1to0 set
  /// for a stuck-at model.
  void validate() const;

  double effective_rate_0to1() const;  ///< rate at which a bit holding 0 becomes 1
  double effective_rate_1to0() const;  ///< rate at which a bit holding 1 becomes 0
  /// Whether any bit can change: false only when both effective rates are 0 (rate 0 of
  /// "random,0to1=0.02" still has errors from 0 to 1).
  bool has_errors() const { return effective_rate_0to1() > 0 || effective_rate_1to0() > 0; }
  /// Kernel parameters for m-bit codes in a container of container_bits bits; Error if bits does
  /// not fit or an Lsb model asks for more than m bits.
  BitErrorParams kernel_params(int bits, int container_bits = 32) const;

  bool operator==(const ErrorModel& other) const;
};

/// Writes clean_codes with the pattern of (seed, param_index) applied into `out` (same shape, dtype
/// and device as clean_codes, contiguous, preallocated; out may be clean_codes itself). Returns the
/// number of bits changed (on CUDA this waits for the kernels). Error for a bad model, a bit width
/// outside [1, container bits], or mismatched tensors.
int64_t inject_bit_errors(const at::Tensor& clean_codes, int bits, const ErrorModel& model, uint64_t seed,
                          int64_t param_index, at::Tensor& out);

/// One tensor of codes in a model-level injection.
struct CodeTensor {
  std::string name;        ///< parameter name, matched by ParamSelector
  at::Tensor clean;        ///< clean codes
  at::Tensor out;          ///< receives clean with errors (same shape/dtype/device, contiguous)
  int bits = 8;            ///< code width m
  int64_t param_index = 0; ///< stream of the pattern: keep it the parameter's position in the model
};

/// Which parameters receive errors, by name: a regular expression searched in the name (RE2 syntax,
/// NOTE [Name regexes]; anchor with ^...$ for whole names). The default selects every parameter.
class ParamSelector {
 public:
  ParamSelector() = default;
  /// Error for an invalid regular expression. An empty pattern selects everything.
  explicit ParamSelector(const std::string& pattern);
  bool selects(const std::string& name) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  NameRegex regex_;
};

/// Injects into many tensors in one call (one kernel pass over all of them, all on one device).
/// Unselected tensors get out = clean. A tensor's pattern depends only on (seed, its param_index),
/// not on the selector or the other tensors. Returns the total number of bits changed.
int64_t inject_bit_errors(const std::vector<CodeTensor>& tensors, const ErrorModel& model, uint64_t seed,
                          const ParamSelector& selector = ParamSelector());
/// The same without counting the bits changed: on CUDA the launches stay asynchronous (nothing
/// waits for the device), for RandBET, which draws a pattern every training step and never reads
/// the count. The patterns are those of inject_bit_errors.
void inject_bit_errors_async(const std::vector<CodeTensor>& tensors, const ErrorModel& model, uint64_t seed,
                             const ParamSelector& selector = ParamSelector());

/// The kernel tasks inject_bit_errors(tensors, model, seed, selector) runs, after its checks
/// (unselected tensors get inactive parameters): for callers with their own kernel, such as the
/// incremental injection of eval::WeightInjector.
std::vector<InjectTask> inject_tasks(const std::vector<CodeTensor>& tensors, const ErrorModel& model,
                                     const ParamSelector& selector = ParamSelector());

}  // namespace bitrobust::bits
