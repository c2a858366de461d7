#pragma once
// Torch-facing quantization: ranges, codes and dequantized values of float32 tensors on the CPU or
// on CUDA (the same results bit for bit). Schemes: bitrobust/quant/scheme.h; formulas: NOTE
// [Quantization formulas] in bitrobust/quant/quantize_math.h.
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "bitrobust/quant/quantize_kernels.h"
#include "bitrobust/quant/scheme.h"

namespace bitrobust::quant {

/// A quantized tensor: what bit errors act on.
struct QuantizedTensor {
  /// The m-bit codes, same shape and device as the weights: uint8 (at::kByte) for m <= 8, int16
  /// (at::kShort, read as uint16_t by the kernels) for m > 8. Bits above m are zero after
  /// quantization and ignored by dequantization.
  at::Tensor codes;
  /// float32 [channels, 2], rows (lo, hi), on the codes' device; see kernels::QuantRange.
  at::Tensor ranges;
  /// 1, or the size of dim 0 for RangeSource::Channel.
  int64_t channels = 1;
  kernels::QuantFormat format;
  QuantScheme scheme;
};

/// Number of ranges the scheme gives w: w.size(0) for RangeSource::Channel and a w of 2 or more
/// dimensions, else 1 (vectors such as biases take one range per tensor).
int64_t range_channels(const at::Tensor& w, const QuantScheme& s);

/// The ranges of w under s: float32 [range_channels(w, s), 2], rows (lo, hi), on w's device.
/// Symmetric rows are (-q, q) with q = global_q (Global), max|w| + 0.001 (Tensor, Channel), each
/// clipped to at most w_max; asymmetric rows are (min, max) of w (Tensor, Channel), (-q, q)
/// (Global), each clamped into [-w_max, w_max]. Throws bitrobust::Error naming `name` when w is
/// not float32, or, on the CPU, holds a NaN or an infinity (checked for every range source); CUDA
/// tensors get their ranges on the device, where such a channel's range is {NaN, NaN} instead.
at::Tensor compute_ranges(const at::Tensor& w, const QuantScheme& s, const std::string& name);

/// Quantizes w (float32, CPU or CUDA, any shape) with ranges from compute_ranges.
QuantizedTensor quantize(const at::Tensor& w, const QuantScheme& s,
                         const std::string& name = "tensor");
/// Quantizes w with given ranges (e.g. a clean model's, after re-training), float32
/// [channels, 2] on w's device.
QuantizedTensor quantize_with_ranges(const at::Tensor& w, const at::Tensor& ranges,
                                     const QuantScheme& s, const std::string& name = "tensor");

/// Writes the dequantized values of q into out: float32, q.codes' shape (any layout with that many
/// elements, contiguous) and device, preallocated. The codes may hold any bits (bit errors).
void dequantize_into(const QuantizedTensor& q, at::Tensor& out);
/// dequantize_into for every (qs[i], outs[i]) in one kernel call (all on one device): a whole
/// model's weights without a parallel region or a kernel launch per tensor.
void dequantize_many_into(const std::vector<QuantizedTensor>& qs, std::vector<at::Tensor>& outs);
/// A new float32 tensor of q.codes' shape and device.
at::Tensor dequantize(const QuantizedTensor& q);

/// out = dequantize(quantize(w)) without materializing codes; out may be w itself. out must be
/// float32, contiguous, with w's number of elements, on w's device. Returns the ranges used.
at::Tensor fake_quantize_into(const at::Tensor& w, at::Tensor& out, const QuantScheme& s,
                              const std::string& name = "tensor");
/// In-place quantize + dequantize (QAT forward weights). Writes through w's storage (no autograd).
void fake_quantize_(at::Tensor& w, const QuantScheme& s, const std::string& name = "tensor");
/// A new tensor dequantize(quantize(w)).
at::Tensor fake_quantize(const at::Tensor& w, const QuantScheme& s,
                         const std::string& name = "tensor");

/// Quantization-aware training's forward weights for a whole model in one call: for each ws[i]
/// (contiguous float32, all on one device), masters[i] = ws[i] when masters is given ((re)allocated
/// on that device when missing or of another shape), then ws[i] = fake_quantize(ws[i], s), each
/// tensor with its own ranges, which `ranges` receives (float32 [sum of channels, 2], reallocated
/// when it does not fit; keep it from call to call). Bit-identical to fake_quantize_ per tensor.
/// On the CPU a NaN or infinite weight throws naming its tensor (names[i]); on CUDA that tensor's
/// channel becomes NaN instead (see compute_ranges_cuda), which the trainer's loss check reports.
void fake_quantize_many_(const std::vector<at::Tensor>& ws, std::vector<at::Tensor>* masters, const QuantScheme& s,
                         const std::vector<std::string>& names, at::Tensor& ranges);
/// The codes of every ws[i] (contiguous float32, one device) with given ranges: `ranges` holds the
/// tensors' rows one after the other, range_channels(ws[i], s) each, as fake_quantize_many_ writes
/// them. codes[i] is (re)allocated when missing or of another shape, type or device; keep the vector
/// from call to call. Bit-identical to quantize_with_ranges per tensor.
void quantize_many_into(const std::vector<at::Tensor>& ws, const at::Tensor& ranges, const QuantScheme& s,
                        std::vector<at::Tensor>& codes);
/// dsts[i] = srcs[i], clamped to [-bound, bound] when bound > 0 (srcs may be dsts: clipping in
/// place), then averaged with average_with[i] when given: (clamped + other) * 0.5, bit for bit what
/// clamp_, add_ and mul_(0.5) give. With positive_zero, -0 in srcs is read as +0, as a gradient
/// accumulated into a zeroed tensor reads. Contiguous float32 tensors on one device, one call for all.
void copy_clamped_many_(const std::vector<at::Tensor>& srcs, const std::vector<at::Tensor>& dsts, float bound,
                        const std::vector<at::Tensor>* average_with = nullptr, bool positive_zero = false);

/// Clamps w in place to [-clip, clip] when s.clip > 0 (the reference's weight clipping during
/// training, applied after each optimizer step); does nothing otherwise.
void clip_weights_(at::Tensor& w, const QuantScheme& s);

/// Which parameters are quantized, by name. A name is selected when `include` is empty or one of
/// its patterns matches, and none of `exclude` matches. Patterns are globs matched against the
/// whole name: '*' any run of characters (dots included), '?' one character, everything else
/// literal ("*.bias", "conv1.*", "fc.weight"). A pattern starting with "re:" is instead
/// a regular expression (RE2 syntax, NOTE [Name regexes]) searched anywhere in the name ("re:^layers\.[0-3]\.").
struct ParamSelector {
  std::vector<std::string> include;
  std::vector<std::string> exclude;
  /// Throws bitrobust::Error for an invalid "re:" pattern (naming it).
  bool selects(const std::string& name) const;
  /// Throws bitrobust::Error for an invalid "re:" pattern among include and exclude.
  void validate() const;
  /// Throws bitrobust::Error naming an include or exclude pattern that matches none of `names`: a
  /// typo would otherwise quietly quantize what it meant to leave out.
  void check_every_pattern_matches(const std::vector<std::string>& names) const;
};

/// Whether a glob (see ParamSelector) matches the whole text.
bool glob_match(const std::string& pattern, const std::string& text);

}  // namespace bitrobust::quant
