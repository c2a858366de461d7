#pragma once
// A fixed-point quantization scheme: what the user chooses (bits, integer type, range, rounding),
// nameable as one string. Grammar and meaning: docs/quantization.md, NOTE [Scheme strings] in
// src/quant/scheme.cpp; formulas: NOTE [Quantization formulas] in bitrobust/quant/quantize_math.h.
#include <string>

#include "bitrobust/quant/quantize_kernels.h"

namespace bitrobust::quant {

/// Where a tensor's range comes from.
enum class RangeSource {
  Global,   ///< a fixed bound q = global_q for every tensor
  Tensor,   ///< each tensor's own max|w| (symmetric) or min and max (asymmetric)
  Channel,  ///< like Tensor, separately for each slice along dim 0 (output channel)
};

struct QuantScheme {
  int bits = 8;                           ///< m in [2, 16]
  bool is_signed = false;                 ///< two's complement, or unsigned offset binary
  bool asymmetric = false;                ///< [min, max] range, or symmetric [-q, q]
  RangeSource source = RangeSource::Global;
  float global_q = 1.0f;                  ///< the bound of RangeSource::Global (ignored otherwise)
  float clip = 0.0f;                      ///< w_max > 0 clips every range to [-w_max, w_max]; 0 = none
  bool round = false;                     ///< round half to even, or truncate

  /// The canonical string, e.g. "u8-asym-tensor-round-clip0.1"; parse(to_string()) == *this.
  std::string to_string() const;
  /// Parses the grammar of docs/quantization.md (also "normal<M>[-clip<W>]", "rquant<M>[-clip<W>]").
  /// Throws bitrobust::Error naming the wrong part and giving the grammar.
  static QuantScheme parse(const std::string& text);
  /// The reference's named schemes: "normal" (global q = 1, symmetric, unsigned, truncation; with
  /// a clip W the global bound is W) and "rquant" (per tensor, asymmetric, unsigned, rounding;
  /// clipped at W). clip = 0: no clipping. Throws bitrobust::Error for other names or bad values.
  static QuantScheme preset(const std::string& name, int bits, float clip = 0.0f);
  /// Throws bitrobust::Error for bits outside [2, 16], a clip bound < 0 or not finite, a global
  /// bound <= 0 or not finite.
  void validate() const;

  /// The kernels' view: integer type, symmetry, rounding, and where ε goes.
  kernels::QuantFormat format() const;

  /// Equality of meaning: global_q is compared only for RangeSource::Global.
  bool operator==(const QuantScheme& other) const;
  bool operator!=(const QuantScheme& other) const { return !(*this == other); }
};

const char* to_string(RangeSource source);

}  // namespace bitrobust::quant
