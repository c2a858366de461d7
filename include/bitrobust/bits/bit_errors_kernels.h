#pragma once
// Torch-free launchers for bit error injection over raw pointers (CPU: OpenMP; CUDA: stream).
// The torch-facing API is bitrobust/bits/bit_errors.h; the sampling is NOTE [Bit error sampling].
#include <cstdint>
#include <string>
#include <vector>

#include "bitrobust/bits/bit_error_sampler.h"
#include "bitrobust/quant/quantize_kernels.h"

namespace bitrobust::bits {

/// -log1p(-rate): the threshold on the exponential sums for selection at `rate` (0 for rate <= 0,
/// +inf for rate >= 1). Computed on the host only, so CPU and CUDA compare against the same double.
double rate_threshold(double rate);

/// Kernel parameters for errors at rates (0->1, 1->0) on bit positions [bit_lo, bit_lo + bit_count).
/// Stuck-at-0 is (0, p), stuck-at-1 is (p, 0), symmetric random errors (p, p).
BitErrorParams make_bit_error_params(int bit_lo, int bit_count, double rate_0to1, double rate_1to0);

/// One tensor of codes to inject into. Elements are unsigned integers of elem_bytes (1, 2 or 4)
/// bytes; only bits named by params are ever changed. `out` receives clean with the pattern of
/// (seed, param_index) applied; out == clean is allowed (in place), other overlaps are not.
struct InjectTask {
  const void* clean = nullptr;
  void* out = nullptr;
  int64_t numel = 0;
  int64_t param_index = 0;
  int32_t elem_bytes = 1;
  BitErrorParams params;
};

/// Injects into all tasks (one OpenMP loop over all their chunks). Returns the number of bits changed.
int64_t inject_bit_errors_cpu(const InjectTask* tasks, int64_t num_tasks, uint64_t seed);

// NOTE [Incremental injection]: a sweep evaluates pattern after pattern on one model, and at low
// rates a pattern changes a small fraction of the codes (0.08% of 8-bit codes at p = 0.01%), while
// copying every code and dequantizing every weight costs more than drawing such a pattern. So the
// incremental form keeps the perturbed codes and the float weights from one pattern to the next and
// writes only what changes: it restores the elements the previous pattern changed, applies the new
// pattern in place, and dequantizes the elements either pattern changed. Each element listed costs
// cache lines fetched at random where the dense path streams through memory, so a pattern expected
// to change 1 in 50 elements or more (8-bit codes from p = 0.25%) is applied densely, as before,
// and the next sparse one starts from a full copy. The result is bit for bit the dense path's
// (inject_bit_errors_cpu into a copy, then dequantize_many_cpu): the same sampler, and the same
// per-element formulas.

/// One tensor of an injection followed by dequantization (incremental on the CPU, fused on CUDA): the
/// codes (inject.clean, inject.out; elements of 1 or 2 bytes, the container of format.bits) and the
/// float weights they dequantize into (channels, ranges and format as in kernels::DequantizeTask).
struct InjectDequantizeTask {
  InjectTask inject;
  float* weights = nullptr;
  int64_t channels = 1;
  const kernels::QuantRange* ranges = nullptr;
  kernels::QuantFormat format;
};

/// Chunks (kChunkElements elements each) in one work item of the CPU kernels: the unit of their
/// OpenMP loops and of IncrementalInjectState's lists. Large enough that the chunks drawn side by
/// side fill their vectors (NOTE [Chunks side by side]: 128 chunks, with 4 items a claim instead of
/// 16, made SimpleNet's incremental pattern 1.25x faster at p = 0.01% than 32, and 1.14x at 0.02%;
/// docs/bit_errors.md, "Fewer waits"), small enough for 16-bit offsets within an item and for an
/// item's codes to stay in L2 between their copy and their flips. A call with a single item (up to
/// 32,768 elements) runs on one thread. Changing it changes no pattern.
constexpr int64_t kCpuItemChunks = 128;

/// What an incremental injection remembers between calls: for each work item of the tasks' layout,
/// the elements whose codes may differ from clean, or, after a dense pattern, that any may. Empty
/// (as constructed, or after clear()): every out code equals its clean code and every weight is its
/// clean dequantized value.
struct IncrementalInjectState {
  std::vector<int64_t> numel;                  ///< the tasks' sizes the lists belong to
  /// Per work item: the elements listed, each as its offset from the item's first element in the
  /// low 16 bits and its clean code in the high 16 (so restoring it reads no clean code). A state
  /// thus describes one set of clean codes: after they change, clear() it.
  std::vector<std::vector<uint32_t>> touched;
  bool dense = false;                          ///< the last pattern was applied densely, not listed
  void clear() {
    numel.clear();
    touched.clear();
    dense = false;
  }
};

/// Applies the pattern of `seed` to every task incrementally (NOTE [Incremental injection]): on
/// return each out holds clean with the pattern applied and each weight the dequantized value of
/// its out code. Requires what `state` records to be true (out == clean and weights clean except
/// at the recorded elements); the caller keeps out, weights and state together. Returns the number
/// of bits changed. Throws, before changing anything, std::invalid_argument if the tasks' sizes
/// differ from the state's, if a task's codes are not in its format's container or out is clean
/// itself, or for a bad element size or bit range (as inject_bit_errors_cpu); bitrobust::Error for a
/// format or channel count no dequantization accepts. Tasks of 0 elements are skipped.
int64_t inject_dequantize_incremental_cpu(const InjectDequantizeTask* tasks, int64_t num_tasks, uint64_t seed,
                                          IncrementalInjectState& state);

/// Vector instructions the CPU sampler runs its lanes on (NOTE [Bit error sampling]): "avx512"
/// (x86-64-v4), "avx2" (x86-64-v3) or "baseline". Every level gives the same bits; by default the
/// best the CPU has is used. Choosing one is for tests and benchmarks that compare them.
std::vector<std::string> cpu_sampler_isas();  ///< levels this CPU can run, best first
std::string cpu_sampler_isa();                ///< the level in use
/// Throws std::invalid_argument naming the levels this CPU can run if `isa` is not one of them.
void set_cpu_sampler_isa(const std::string& isa);

/// CUDA twin of inject_bit_errors_cpu with bit-identical results, enqueued on `stream` (a
/// cudaStream_t). Pointers in tasks are device pointers; `tasks` itself is host memory, read before
/// return. If changed_count (device pointer) is not null, the number of bits changed is added to it.
/// Throws std::runtime_error on a CUDA launch error.
void inject_bit_errors_cuda(const InjectTask* tasks, int64_t num_tasks, uint64_t seed,
                            unsigned long long* changed_count, void* stream);

/// The CUDA form of a sweep's step, with the result of inject_bit_errors_cpu into out followed by
/// dequantize_many_cpu of out into weights, bit for bit, in one pass: each warp copies its chunk of
/// codes, applies the chunk's selected bits and dequantizes the chunk (one launch per batch of tensors
/// instead of an injection and a dequantization launch per batch, and no second read of the codes).
/// On CUDA a pattern changes codes all over the model within a few microseconds, so there is no
/// incremental form. All pointers in tasks are device pointers; `tasks` itself is host memory, read
/// before return; tasks of 0 elements are skipped. If changed_count (device pointer) is not null, the
/// number of bits changed is added to it. Throws, before launching anything, std::invalid_argument for
/// a bad element size or bit range, codes not in their format's container, or a null or misaligned
/// pointer in a task of 1 or more elements, bitrobust::Error for a
/// format or channel count no dequantization accepts; std::runtime_error on a CUDA launch error.
void inject_dequantize_cuda(const InjectDequantizeTask* tasks, int64_t num_tasks, uint64_t seed,
                            unsigned long long* changed_count, void* stream);

/// One selected bit of a tensor: element index, bit position, action.
struct SelectedBit {
  int64_t element;
  int32_t bit;
  FlipKind kind;
};

/// Host: the selected bits of a tensor of `numel` elements, ordered by chunk, then by S.
std::vector<SelectedBit> draw_selected_bits(int64_t numel, const BitErrorParams& params, uint64_t seed,
                                            int64_t param_index);

/// Applies explicit actions to codes in place (host memory). Returns the number of bits changed.
/// Every element index must be < numel and every bit < 8 * elem_bytes (checked by the caller).
int64_t apply_selected_bits_cpu(void* codes, int32_t elem_bytes, const SelectedBit* bits, int64_t count);

/// CUDA twin: `codes` and `bits` are device pointers; the count of bits changed is added to
/// changed_count (device pointer, may be null). The same element may appear several times.
void apply_selected_bits_cuda(void* codes, int32_t elem_bytes, const SelectedBit* bits, int64_t count,
                              unsigned long long* changed_count, void* stream);

}  // namespace bitrobust::bits
