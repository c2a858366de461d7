#pragma once
// Fixed-point quantization kernels over raw pointers: plain C++ (no Torch), shared by the CPU
// kernels (src/kernels/cpu/quantize_cpu.cpp), their CUDA twins (src/kernels/cuda/quantize_cuda.cu)
// and the bit error code. The formulas are in bitrobust/quant/quantize_math.h, see
// NOTE [Quantization formulas] there.
//
// Layout: n floats split into `channels` contiguous groups of n / channels elements (channel c is
// elements [c * n/channels, (c+1) * n/channels)), each with its own QuantRange; channels = 1 is one
// range for the whole tensor. For a tensor of shape [C, ...] in row-major order, per-output-channel
// (dim 0) ranges are exactly this layout with channels = C.
//
// Codes: one m-bit pattern per element in the smallest container holding m bits: uint8_t for
// m <= 8, uint16_t for 9 <= m <= 16. Quantization writes only the m low bits (signed codes are two's
// complement truncated to m bits); dequantization masks the container to its m low bits first, so
// any container value (as bit errors produce them) dequantizes into the channel's range.
#include <cstdint>

namespace bitrobust::kernels {

/// The range of one channel, in weight units.
/// Symmetric formats read only hi (= q, already clipped) and clamp to [-hi, hi]; store lo = -hi.
/// Asymmetric formats clamp to [lo, hi]; lo <= hi, and lo == hi (a constant channel) is exact.
struct QuantRange {
  float lo;
  float hi;
};

/// How values are coded; together with a QuantRange per channel it defines the quantizer.
struct QuantFormat {
  int bits = 8;             ///< m in [2, 16]
  bool is_signed = false;   ///< two's complement (true) or offset binary (false)
  bool asymmetric = false;  ///< [lo, hi] is first mapped onto [-1, 1]
  bool round = false;       ///< round half to even (true) or truncate (signed: toward zero; unsigned: floor)
  /// ε in Δ = (bound + ε) / (2^(m-1) - 1); bound = hi (symmetric) or 1 (asymmetric). 0.001 for a
  /// global range and for every asymmetric format, 0 for symmetric per-tensor/per-channel ranges,
  /// whose hi already contains it. See NOTE [Where epsilon goes] in quantize_math.h.
  float step_eps = 0.001f;
};

/// Bytes of one code container: 1 (uint8_t) for m <= 8, 2 (uint16_t) for m > 8.
inline int code_container_bytes(int bits) { return bits <= 8 ? 1 : 2; }

// All functions throw bitrobust::Error for bits outside [2, 16], channels < 1, n < 0 or n not a
// multiple of channels; n = 0 does nothing. `ranges` has `channels` entries.

/// codes[i] = m-bit code of w[i]. `codes` points to n uint8_t or uint16_t (by f.bits).
void quantize_cpu(const float* w, int64_t n, int64_t channels, const QuantRange* ranges,
                  QuantFormat f, void* codes);
/// out[i] = value of the m low bits of codes[i]; bits above m are ignored.
void dequantize_cpu(const void* codes, int64_t n, int64_t channels, const QuantRange* ranges,
                    QuantFormat f, float* out);
/// One tensor of a multi-tensor quantization: quantize_cpu's arguments.
struct QuantizeTask {
  const float* w = nullptr;
  int64_t n = 0;
  int64_t channels = 1;
  const QuantRange* ranges = nullptr;
  QuantFormat format;
  void* codes = nullptr;
};
/// quantize_cpu for every task, in one parallel region over all their elements.
void quantize_many_cpu(const QuantizeTask* tasks, int64_t count);

/// One tensor of a multi-tensor dequantization: dequantize_cpu's arguments.
struct DequantizeTask {
  const void* codes = nullptr;
  int64_t n = 0;
  int64_t channels = 1;
  const QuantRange* ranges = nullptr;
  QuantFormat format;
  float* out = nullptr;
};
/// dequantize_cpu for every task, in one parallel region over all their elements: a model's weights
/// in one call, without a fork and join for each of its small tensors.
void dequantize_many_cpu(const DequantizeTask* tasks, int64_t count);
/// out[i] = dequantize(quantize(w[i])) without a code buffer (QAT forward weights); out may be w.
void quantize_dequantize_cpu(const float* w, int64_t n, int64_t channels, const QuantRange* ranges,
                             QuantFormat f, float* out);
/// Per-channel minimum and maximum of w into mins[c], maxs[c]. Returns false (mins/maxs then
/// unspecified) when w holds a NaN or an infinity.
bool minmax_cpu(const float* w, int64_t n, int64_t channels, float* mins, float* maxs);

/// How a channel's range follows from the minimum and maximum of its weights (range_of_channel in
/// quantize_math.h; NOTE [Range rows] in src/quant/quantizer.cpp).
struct RangeRule {
  static constexpr int32_t kGlobal = 0;      ///< [-global_q, global_q] whatever the weights
  static constexpr int32_t kSymmetric = 1;   ///< [-q, q], q = max |w| + ε (then clipped)
  static constexpr int32_t kAsymmetric = 2;  ///< [min w, max w] (each clipped)
  int32_t kind = kGlobal;
  float clip = 0.0f;      ///< > 0: the clipping bound w_max
  float global_q = 1.0f;  ///< kGlobal's bound, already min(global_q, clip)
};

// ---- Quantization-aware training over a whole model: one call per step, not one per tensor ----

/// One tensor of fake_quantize_many_*: ranges from w's own min and max by `rule`, then
/// out[i] = dequantize(quantize(w[i])); first, when `master` is set, master[i] = w[i] (the float
/// weights QAT restores after the backward pass). out may be w.
struct FakeQuantizeTask {
  const float* w = nullptr;
  float* master = nullptr;
  float* out = nullptr;
  int64_t n = 0;
  int64_t channels = 1;
  RangeRule rule;
  QuantFormat format;
};
/// Returns the index of the first task whose weights hold a NaN or an infinity (that task and those
/// after it are left unquantized), or -1. `ranges` receives every task's ranges, task after task
/// (sum of the tasks' channels entries).
int64_t fake_quantize_many_cpu(const FakeQuantizeTask* tasks, int64_t count, QuantRange* ranges);

/// One tensor of copy_clamped_many_*: dst[i] = src[i] (+ 0.0f when positive_zero, which turns -0
/// into +0 as accumulating into a zeroed gradient does), clamped to [-bound, bound] when bound > 0
/// (NaN stays NaN), then, when average_with is set, dst[i] = (dst[i] + average_with[i]) * 0.5f
/// (RandBET's update: the clamped perturbed gradient averaged with the clean one). src may be dst.
struct CopyClampTask {
  const float* src = nullptr;
  float* dst = nullptr;
  int64_t n = 0;
  float bound = 0.0f;
  bool positive_zero = false;
  const float* average_with = nullptr;
};
void copy_clamped_many_cpu(const CopyClampTask* tasks, int64_t count);

// CUDA twins (defined only when the CUDA kernels are built): the same results bit for bit. All
// pointers, `ranges` included, are device memory; `stream` is a cudaStream_t, launches are
// asynchronous on it.
void quantize_cuda(const float* w, int64_t n, int64_t channels, const QuantRange* ranges,
                   QuantFormat f, void* codes, void* stream);
void dequantize_cuda(const void* codes, int64_t n, int64_t channels, const QuantRange* ranges,
                     QuantFormat f, float* out, void* stream);
void quantize_dequantize_cuda(const float* w, int64_t n, int64_t channels,
                              const QuantRange* ranges, QuantFormat f, float* out, void* stream);
/// dequantize_many_cpu's twin: one launch per 32 tasks of one format (sign, symmetry, container),
/// instead of one per tensor, so that loading a model's weights is not bound by launch latency.
void dequantize_many_cuda(const DequantizeTask* tasks, int64_t count, void* stream);
/// quantize_many_cpu's twin: one launch per 32 tasks of one format.
void quantize_many_cuda(const QuantizeTask* tasks, int64_t count, void* stream);
/// fake_quantize_many_cpu's twin: a few launches per 32 tasks of one format. `ranges` (device,
/// sum of channels entries) is scratch for the ranges; a channel holding a NaN or an infinity gets
/// the range {NaN, NaN} (as compute_ranges_cuda), so its weights become NaN: nothing is returned,
/// since that would synchronise with the device.
void fake_quantize_many_cuda(const FakeQuantizeTask* tasks, int64_t count, QuantRange* ranges, void* stream);
void copy_clamped_many_cuda(const CopyClampTask* tasks, int64_t count, void* stream);
/// ranges[c] = range_of_channel(min, max of channel c, rule), computed on the device so that
/// quantization-aware training needs no host round trip per parameter and step. A channel holding
/// a NaN or an infinity gets the range {NaN, NaN} (the host path throws instead; on the GPU the
/// NaN reaches the loss, and the trainer stops with a message naming the epoch and step).
void compute_ranges_cuda(const float* w, int64_t n, int64_t channels, RangeRule rule, QuantRange* ranges,
                         void* stream);

}  // namespace bitrobust::kernels
