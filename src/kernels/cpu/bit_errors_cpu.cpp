// CPU kernels for bit error injection; see NOTE [Bit error sampling].
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "bitrobust/bits/bit_errors_kernels.h"
#include "bitrobust/quant/quantize_math.h"

namespace bitrobust::bits {

double rate_threshold(double rate) {
  if (!(rate > 0.0)) return 0.0;
  if (rate >= 1.0) return std::numeric_limits<double>::infinity();
  return -std::log1p(-rate);
}

BitErrorParams make_bit_error_params(int bit_lo, int bit_count, double rate_0to1, double rate_1to0) {
  BitErrorParams params;
  params.bit_lo = bit_lo;
  params.bit_count = bit_count;
  params.threshold_0to1 = rate_threshold(rate_0to1);
  params.threshold_1to0 = rate_threshold(rate_1to0);
  const double t_max = params.threshold_max();
  if (bit_count > 0 && t_max > 0.0 && std::isfinite(t_max)) {  // NOTE [Empty chunk shortcut]
    const double n = static_cast<double>(kChunkElements) * bit_count;
    params.empty_chunk_v_max = std::exp(-(n * t_max * (1.0 + 1e-9) + 1e-12));
  }
  return params;
}

namespace {

// Chunks per OpenMP work item (kCpuItemChunks, bit_errors_kernels.h).
constexpr int64_t kChunksPerItem = kCpuItemChunks;
static_assert(kChunksPerItem * kChunkElements <= 65536, "incremental injection notes element offsets in 16 bits");
// Order statistics computed at once, of one chunk (draw_chunks) or of chunks side by side (the
// injections; NOTE [Chunks side by side]): one 512-bit vector of doubles.
constexpr int kCpuLanes = 8;
// Chunks expected to select fewer bits than this (n * T, NOTE [Bit error sampling]) are drawn side by
// side (NOTE [Chunks side by side]), others one after the other, kCpuLanes order statistics at a
// time. Side by side took, against one after the other, on SimpleNet's 5.5 M 8-bit codes, one
// thread (2026-12-05, docs/bit_errors.md): 0.65x the time at p = 0.01%, 0.48-0.52x at 0.05-0.1%
// (n * T = 1-2), 0.86x at 0.5%, 0.92x at 0.7% (n * T = 14.4), but 1.04x at 1% (20.6) and 1.15x
// at 10%.
constexpr double kSideBySideBelow = 16.0;

struct WorkItem {
  int64_t task;
  int64_t first_chunk;
  int64_t num_chunks;
};

// A listed element (IncrementalInjectState::touched): its offset from its work item's first element
// in the low 16 bits, its clean code in the high 16. Restoring it then loads no clean code: of the
// three arrays an element is read or written in at a random place (clean codes, out codes,
// weights), one is left out.
constexpr uint32_t listed_entry(uint32_t offset, uint32_t clean_code) { return offset | clean_code << 16; }
constexpr uint32_t listed_offset(uint32_t entry) { return entry & 0xFFFFu; }
constexpr uint32_t listed_clean_code(uint32_t entry) { return entry >> 16; }

// kRecord, incremental injection (NOTE [Incremental injection]): out already holds clean except at
// the item's elements in *listed (listed_entry), and only those are restored instead of copying the
// item; the elements this pattern changes are appended to *listed, each once, after the previous
// pattern's (which the caller removes once their weights are restored). `weights`: where the
// elements' weights are, fetched ahead of their dequantization.
template <typename T, bool kRecord = false>
int64_t inject_item(const InjectTask& task, const WorkItem& item, uint64_t seed, std::vector<uint32_t>* listed = nullptr,
                    const float* weights = nullptr) {
  static_assert(sizeof(T) <= 2 || !kRecord, "listed entries hold 16-bit codes");
  const int64_t begin = item.first_chunk * kChunkElements;
  const int64_t end = std::min(task.numel, (item.first_chunk + item.num_chunks) * kChunkElements);
  const T* clean = static_cast<const T*>(task.clean);
  T* out = static_cast<T*>(task.out);
  // The elements to restore lie at random places in the item and are rarely in cache: their lines
  // are requested now and they are restored once the pattern is drawn (drawing only notes the
  // bits), the sampler's arithmetic having hidden the wait.
  const auto restore_listed = [&] {
    for (const uint32_t entry : *listed) out[begin + listed_offset(entry)] = static_cast<T>(listed_clean_code(entry));
  };
  if constexpr (kRecord) {
    for (const uint32_t entry : *listed) {
      __builtin_prefetch(out + begin + listed_offset(entry), 1);
      if (weights != nullptr) __builtin_prefetch(weights + begin + listed_offset(entry), 1);
    }
  } else if (clean != out) {
    std::memcpy(out + begin, clean + begin, static_cast<size_t>(end - begin) * sizeof(T));
  }
  const BitErrorParams& params = task.params;
  if (!params.active()) {
    if constexpr (kRecord) restore_listed();
    return 0;
  }
  // The first Philox block of every chunk in one pass of independent work (no branches between
  // chunks), so that the rounds of neighbouring chunks overlap; at low rates most chunks end at its
  // first uniform (NOTE [Empty chunk shortcut]). The loops run in SIMD registers over whole vectors
  // of kCpuLanes (lanes past the item's chunks are computed and ignored, and the compiler's remainder
  // loop never runs), so a small tensor's item pays for a vector, not for kChunksPerItem lanes.
  const uint64_t prefix = param_key_prefix(seed, task.param_index);
  const int lanes = static_cast<int>((item.num_chunks + kCpuLanes - 1) / kCpuLanes * kCpuLanes);
  uint64_t keys[kChunksPerItem];
  uint32_t counter0[kChunksPerItem], key_lo[kChunksPerItem], key_hi[kChunksPerItem];
  uint32_t words[4][kChunksPerItem];
  for (int k = 0; k < lanes; ++k) {
    keys[k] = chunk_key(prefix, item.first_chunk + k);
    counter0[k] = 0;
    key_lo[k] = static_cast<uint32_t>(keys[k]);
    key_hi[k] = static_cast<uint32_t>(keys[k] >> 32);
  }
  philox4x32_lanes<kChunksPerItem>(lanes, counter0, key_lo, key_hi, words);
  int64_t changed = 0;
  const bool symmetric = params.threshold_0to1 == params.threshold_1to0;
  thread_local std::vector<uint32_t> pending;  // kRecord: the selected bits, noted (kept from call to call)
  if constexpr (kRecord) pending.clear();
  const int64_t item_end = task.numel - begin;  // elements of the item at or past it are padding
  const auto apply = [&](int k, int32_t element, int32_t bit, double s) {
    const uint32_t offset = static_cast<uint32_t>(k * kChunkElements + element);  // from the item's first element
    if (offset >= item_end) return;
    if constexpr (kRecord) {
      // The codes were not just copied, so they are rarely in cache: the bit is noted and its
      // cache lines fetched now, and the change made once the item's pattern is drawn.
      __builtin_prefetch(out + begin + offset, 1);
      if (weights != nullptr) __builtin_prefetch(weights + begin + offset, 1);
      pending.push_back(offset << 16 | static_cast<uint32_t>(bit) << 8 | static_cast<uint32_t>(params.kind_of(s)));
      return;
    }
    T& code = out[begin + offset];
    const T mask = static_cast<T>(T{1} << bit);
    // With equal thresholds every selected bit flips, whatever its value: no branch waits for
    // the code's load.
    if (symmetric || ((code & mask) != 0 ? s < params.threshold_1to0 : s < params.threshold_0to1)) {
      code = static_cast<T>(code ^ mask);
      ++changed;
    }
  };
  constexpr int kMaxWords = chunk_bitmap_words(8 * sizeof(T));
  if (static_cast<double>(kChunkElements) * params.bit_count * params.threshold_max() < kSideBySideBelow) {
    for_each_selected_bit_side_by_side<kMaxWords, kChunksPerItem, kCpuLanes>(params, static_cast<int>(item.num_chunks),
                                                                            keys, words, apply);
  } else {
    for (int k = 0; k < static_cast<int>(item.num_chunks); ++k) {
      if (uniform_open01(words[0][k], words[1][k]) <= params.empty_chunk_v_max) continue;  // NOTE [Empty chunk shortcut]
      for_each_selected_bit<kMaxWords, 0, kCpuLanes, true>(
          params, keys[k], [&](int32_t element, int32_t bit, double s) { apply(k, element, bit, s); });
    }
  }
  if constexpr (kRecord) {
    restore_listed();
    // A selected bit changes when it flips whatever its value, or when it is set to the value it
    // does not hold (FlipKind; NOTE [Bit error sampling]). Every code of the item is clean now, so
    // an element's first change lists it with the code it changes, the clean one; `seen` (all
    // zero between calls) tells a later change of the same element.
    thread_local uint64_t seen[kChunksPerItem * kChunkElements / 64] = {};
    T* item_out = out + begin;
    const size_t first_listed = listed->size();
    listed->reserve(first_listed + pending.size());  // (no allocation failure once `seen` is in use)
    for (const uint32_t note : pending) {
      const uint32_t offset = note >> 16;
      const T mask = static_cast<T>(T{1} << ((note >> 8) & 0xFFu));
      const auto kind = static_cast<FlipKind>(note & 0xFFu);
      const T code = item_out[offset];
      if (kind == FlipKind::Flip || (kind == FlipKind::Set1) == ((code & mask) == 0)) {
        const uint64_t bit = uint64_t{1} << (offset & 63);
        if ((seen[offset >> 6] & bit) == 0) {
          seen[offset >> 6] |= bit;
          listed->push_back(listed_entry(offset, code));
        }
        item_out[offset] = static_cast<T>(code ^ mask);
        ++changed;
      }
    }
    for (size_t j = first_listed; j < listed->size(); ++j) seen[listed_offset((*listed)[j]) >> 6] = 0;
  }
  return changed;
}

// weights[e] = the dequantized value of out[e], for the listed elements of the item starting at
// `begin`: dequantize_segment's formulas (quantize_cpu.cpp) for one element at a time.
template <typename T, bool kSigned, bool kAsymmetric>
void dequantize_listed(const InjectDequantizeTask& task, int64_t begin, const std::vector<uint32_t>& listed) {
  const T* out = static_cast<const T*>(task.inject.out);
  const int64_t per_channel = task.inject.numel / task.channels;
  // Listed elements are mostly in one channel (channels span hundreds of elements or more), so the
  // channel's parameters are recomputed only when it changes.
  int64_t channel_begin = 0, channel_end = 0;
  kernels::QuantParams p{};
  const size_t count = listed.size();
  for (size_t j = 0; j < count; ++j) {
    if (j + 8 < count) __builtin_prefetch(task.weights + begin + listed_offset(listed[j + 8]), 1);
    const int64_t e = begin + listed_offset(listed[j]);
    if (e < channel_begin || e >= channel_end) {
      const int64_t channel = e / per_channel;
      channel_begin = channel * per_channel;
      channel_end = channel_begin + per_channel;
      p = kernels::make_quant_params(task.ranges[channel], task.format);
    }
    task.weights[e] = kernels::dequantize_value<kAsymmetric>(kernels::value_of_pattern<kSigned>(out[e], p), p);
  }
}

template <typename T>
void dequantize_listed(const InjectDequantizeTask& task, int64_t begin, const std::vector<uint32_t>& listed) {
  const kernels::QuantFormat& f = task.format;
  if (f.is_signed) {
    f.asymmetric ? dequantize_listed<T, true, true>(task, begin, listed)
                 : dequantize_listed<T, true, false>(task, begin, listed);
  } else {
    f.asymmetric ? dequantize_listed<T, false, true>(task, begin, listed)
                 : dequantize_listed<T, false, false>(task, begin, listed);
  }
}

// Per-chunk work over all chunks of a tensor for draw_selected_bits.
void draw_chunks(int64_t numel, const BitErrorParams& params, uint64_t seed, int64_t param_index,
                 std::vector<SelectedBit>& selected) {
  const int64_t chunks = (numel + kChunkElements - 1) / kChunkElements;
  const uint64_t prefix = param_key_prefix(seed, param_index);
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t base = c * kChunkElements;
    const uint64_t key = chunk_key(prefix, c);
    // NOTE [Empty chunk shortcut] with one Philox block, before the sampler computes a full vector.
    if (first_chunk_uniform(key) <= params.empty_chunk_v_max) continue;
    for_each_selected_bit<chunk_bitmap_words(32), 0, kCpuLanes, true>(
        params, key, [&](int32_t element, int32_t bit, double s) {
          if (base + element < numel) selected.push_back({base + element, bit, params.kind_of(s)});
        });
  }
}

// NOTE [Sampler instruction sets]: the sampler's lanes (philox4x32_lanes, SpacingLanes) run in
// AVX-512 or AVX2 registers where the CPU has them, in copies of the work functions compiled for
// each level (`flatten` inlines the sampler into each copy, which is what makes it use that level's
// vector unit). Every copy computes the same bits: integer work, and IEEE double operations that are
// never contracted into fused multiply-adds (-ffp-contract=off; NOTE [Deterministic math]). The
// choice is explicit rather than target_clones so that tests can run every level this CPU has and
// check exactly that.
struct SamplerIsa {
  const char* name;
  bool (*supported)();
  int64_t (*inject_item[3])(const InjectTask&, const WorkItem&, uint64_t);  // 1, 2, 4 bytes
  int64_t (*incremental_item[2])(const InjectTask&, const WorkItem&, uint64_t, std::vector<uint32_t>*,
                                 const float*);  // 1, 2 bytes
  void (*draw)(int64_t, const BitErrorParams&, uint64_t, int64_t, std::vector<SelectedBit>&);
};

#define BR_SAMPLER_COPIES(suffix, attributes)                                                           \
  attributes int64_t inject_item_8##suffix(const InjectTask& t, const WorkItem& w, uint64_t seed) {  \
    return inject_item<uint8_t>(t, w, seed);                                                          \
  }                                                                                                   \
  attributes int64_t inject_item_16##suffix(const InjectTask& t, const WorkItem& w, uint64_t seed) { \
    return inject_item<uint16_t>(t, w, seed);                                                         \
  }                                                                                                   \
  attributes int64_t inject_item_32##suffix(const InjectTask& t, const WorkItem& w, uint64_t seed) { \
    return inject_item<uint32_t>(t, w, seed);                                                         \
  }                                                                                                   \
  attributes int64_t incremental_item_8##suffix(const InjectTask& t, const WorkItem& w, uint64_t seed,     \
                                                std::vector<uint32_t>* listed, const float* weights) { \
    return inject_item<uint8_t, true>(t, w, seed, listed, weights);                                   \
  }                                                                                                   \
  attributes int64_t incremental_item_16##suffix(const InjectTask& t, const WorkItem& w, uint64_t seed,    \
                                                 std::vector<uint32_t>* listed, const float* weights) {\
    return inject_item<uint16_t, true>(t, w, seed, listed, weights);                                  \
  }                                                                                                   \
  attributes void draw_chunks##suffix(int64_t numel, const BitErrorParams& params, uint64_t seed,     \
                                      int64_t param_index, std::vector<SelectedBit>& selected) {      \
    draw_chunks(numel, params, seed, param_index, selected);                                          \
  }

BR_SAMPLER_COPIES(_baseline, )
bool always() { return true; }

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
BR_SAMPLER_COPIES(_avx2, __attribute__((target("arch=x86-64-v3"), flatten)))
BR_SAMPLER_COPIES(_avx512, __attribute__((target("arch=x86-64-v4"), flatten)))
#if __GNUC__ >= 12
bool has_avx2() { return __builtin_cpu_supports("x86-64-v3"); }
bool has_avx512() { return __builtin_cpu_supports("x86-64-v4"); }
#else  // GCC 11 knows the features but not the level names
bool has_avx2() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi") &&
         __builtin_cpu_supports("bmi2");
}
bool has_avx512() {
  return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512cd");
}
#endif
const SamplerIsa kSamplerIsas[] = {
    {"avx512", has_avx512, {inject_item_8_avx512, inject_item_16_avx512, inject_item_32_avx512},
     {incremental_item_8_avx512, incremental_item_16_avx512}, draw_chunks_avx512},
    {"avx2", has_avx2, {inject_item_8_avx2, inject_item_16_avx2, inject_item_32_avx2},
     {incremental_item_8_avx2, incremental_item_16_avx2}, draw_chunks_avx2},
    {"baseline", always, {inject_item_8_baseline, inject_item_16_baseline, inject_item_32_baseline},
     {incremental_item_8_baseline, incremental_item_16_baseline},
     draw_chunks_baseline},
};
#else
const SamplerIsa kSamplerIsas[] = {
    {"baseline", always, {inject_item_8_baseline, inject_item_16_baseline, inject_item_32_baseline},
     {incremental_item_8_baseline, incremental_item_16_baseline},
     draw_chunks_baseline},
};
#endif
#undef BR_SAMPLER_COPIES

constexpr int kNumSamplerIsas = static_cast<int>(sizeof(kSamplerIsas) / sizeof(kSamplerIsas[0]));

int best_sampler_isa() {
  for (int i = 0; i < kNumSamplerIsas; ++i) {
    if (kSamplerIsas[i].supported()) return i;
  }
  return kNumSamplerIsas - 1;
}

std::atomic<int> g_sampler_isa{-1};  // index into kSamplerIsas; -1: not chosen yet

const SamplerIsa& sampler_isa() {
  int index = g_sampler_isa.load(std::memory_order_relaxed);
  if (index < 0) {
    index = best_sampler_isa();
    g_sampler_isa.store(index, std::memory_order_relaxed);
  }
  return kSamplerIsas[index];
}

void check_task(const InjectTask& task) {
  if (task.elem_bytes != 1 && task.elem_bytes != 2 && task.elem_bytes != 4) {
    throw std::invalid_argument("inject_bit_errors_cpu: elem_bytes must be 1, 2 or 4");
  }
  if (task.params.bit_count > 0 &&
      (task.params.bit_lo < 0 || task.params.bit_lo + task.params.bit_count > 8 * task.elem_bytes)) {
    throw std::invalid_argument("inject_bit_errors_cpu: bit range outside the element");
  }
}

}  // namespace

namespace {

// Work items of kChunksPerItem chunks over all tasks, in task order.
template <typename Task, typename InjectTaskOf>
std::vector<WorkItem> work_items(const Task* tasks, int64_t num_tasks, InjectTaskOf inject_task_of) {
  std::vector<WorkItem> items;
  for (int64_t t = 0; t < num_tasks; ++t) {
    const int64_t chunks = (inject_task_of(tasks[t]).numel + kChunkElements - 1) / kChunkElements;
    for (int64_t c = 0; c < chunks; c += kChunksPerItem) {
      items.push_back({t, c, std::min(kChunksPerItem, chunks - c)});
    }
  }
  return items;
}

// About the number of bits a pattern selects among `elements` (fewer at high rates), so at most
// the elements it changes.
double expected_changes(const BitErrorParams& params, int64_t elements) {
  if (!params.active()) return 0.0;
  const double t_max = params.threshold_max();
  return static_cast<double>(elements) * params.bit_count * (t_max < 1.0 ? t_max : 1.0);
}

// Rough cost in ns of drawing a task's pattern: one Philox block per chunk, ~25 ns per selected bit.
double sampling_cost_ns(const InjectTask& task) {
  if (!task.params.active()) return 0.0;
  return 10.0 * static_cast<double>(task.numel) / kChunkElements + 25.0 * expected_changes(task.params, task.numel);
}

// Below ~50 us of estimated work a second thread costs more to wake and join than it saves. (At
// 0.2 ms, SimpleNet's 5.5 MB of codes at p = 0 were copied by one thread, and copying plus
// dequantizing took longer than with two threads: 0.99-1.9 ms against 0.87-0.95 ms,
// bench_end_to_end, 2026-11-28.)
constexpr double kParallelCostNs = 5e4;

// Work items a thread claims at once, up to 4, leaving at least 8 claims a thread for balance
// (small models get fewer items a claim, down to one). Claimed one at a time, two threads take
// turns on neighbouring items and share cache lines between them: the scheduler's counter, the
// codes at item boundaries and, incremental, the neighbouring items' list headers. With items of
// 32 chunks, claiming 16 instead of one, and nothing else changed, made a pattern of 5.5 M 8-bit
// codes 1.11x faster at p = 0.01%, dense, and 1.33x, incremental (1.17x at 0.02%; two threads,
// bench/inject_kernel_timing.cpp, 2026-12-05; docs/bit_errors.md, "Fewer waits"). With items of 128
// chunks, 4 a claim did as well as 16 at low rates and better at p = 1% (0.97x the time, dense),
// where larger claims leave one thread with the last one.
int64_t items_per_claim(int64_t num_items) {
  return std::clamp<int64_t>(num_items / (8 * static_cast<int64_t>(omp_get_max_threads())), 1, 4);
}

}  // namespace

int64_t inject_bit_errors_cpu(const InjectTask* tasks, int64_t num_tasks, uint64_t seed) {
  for (int64_t t = 0; t < num_tasks; ++t) check_task(tasks[t]);
  const std::vector<WorkItem> items = work_items(tasks, num_tasks, [](const InjectTask& t) -> const InjectTask& { return t; });
  const int64_t num_items = static_cast<int64_t>(items.size());
  double cost_ns = 0.0;  // the copy, then the sampler
  for (int64_t t = 0; t < num_tasks; ++t) {
    cost_ns += 0.025 * static_cast<double>(tasks[t].numel * tasks[t].elem_bytes) + sampling_cost_ns(tasks[t]);
  }
  const SamplerIsa& isa = sampler_isa();
  const int64_t claim = items_per_claim(num_items);
  int64_t changed = 0;
#pragma omp parallel for schedule(dynamic, claim) reduction(+ : changed) if (num_items > 1 && cost_ns > kParallelCostNs)
  for (int64_t i = 0; i < num_items; ++i) {
    const InjectTask& task = tasks[items[i].task];
    switch (task.elem_bytes) {
      case 1: changed += isa.inject_item[0](task, items[i], seed); break;
      case 2: changed += isa.inject_item[1](task, items[i], seed); break;
      default: changed += isa.inject_item[2](task, items[i], seed); break;
    }
  }
  return changed;
}

namespace {

// A pattern is applied by listing its elements while it is expected to change fewer than 1 in
// kListedFraction of the model's elements. Listed elements are changed, restored and dequantized
// one by one at random places in memory, where the dense path streams through all of it: measured
// on SimpleNet (5.5 M 8-bit codes, bench_end_to_end, every pattern listed, 2026-11-28), listing took
// 0.66x the time of the dense path at p = 0.05% (0.4% of the codes change), 0.88x at 0.1% and 1.09x
// at 0.2%: break-even near 1.2% of the elements. Since the listed elements are fetched ahead and
// their clean codes listed with them (2026-12-05), listing takes 0.92x at 0.2% (1.6% of the
// elements), about 1.0x at 0.3% and 1.1x at 0.5% (5.5 M 8-bit codes in one tensor,
// bench/inject_kernel_timing.cpp, 2 threads): break-even near 2.4%.
constexpr double kListedFraction = 50.0;

// Every task's codes copied from clean with the pattern applied, and every weight dequantized.
int64_t inject_dequantize_dense(const InjectDequantizeTask* tasks, int64_t num_tasks, uint64_t seed) {
  std::vector<InjectTask> injects(static_cast<size_t>(num_tasks));
  std::vector<kernels::DequantizeTask> dequantizes;
  for (int64_t t = 0; t < num_tasks; ++t) {
    const InjectDequantizeTask& task = tasks[t];
    injects[t] = task.inject;
    // An empty tensor has nothing to dequantize (and may have 0 channels).
    if (task.inject.numel == 0) continue;
    dequantizes.push_back({task.inject.out, task.inject.numel, task.channels, task.ranges, task.format, task.weights});
  }
  const int64_t changed = inject_bit_errors_cpu(injects.data(), num_tasks, seed);
  kernels::dequantize_many_cpu(dequantizes.data(), static_cast<int64_t>(dequantizes.size()));
  return changed;
}

}  // namespace

int64_t inject_dequantize_incremental_cpu(const InjectDequantizeTask* tasks, int64_t num_tasks, uint64_t seed,
                                          IncrementalInjectState& state) {
  std::vector<int64_t> numel(static_cast<size_t>(num_tasks));
  double total = 0.0, expected = 0.0, cost_ns = 0.0;
  for (int64_t t = 0; t < num_tasks; ++t) {
    const InjectDequantizeTask& task = tasks[t];
    check_task(task.inject);
    numel[t] = task.inject.numel;
    if (task.inject.numel == 0) continue;  // no codes (their pointers may be null), no channels
    kernels::check_quant_kernel_args("inject_dequantize_incremental_cpu", task.inject.numel, task.channels, task.format);
    if (task.inject.elem_bytes != kernels::code_container_bytes(task.format.bits) || task.inject.clean == task.inject.out) {
      throw std::invalid_argument(
          "inject_dequantize_incremental_cpu: codes must be in their format's container, with out apart from clean");
    }
    total += static_cast<double>(task.inject.numel);
    expected += expected_changes(task.inject.params, task.inject.numel);
    cost_ns += sampling_cost_ns(task.inject);
  }
  if (state.numel.empty() && state.touched.empty() && !state.dense) state.numel = numel;
  if (state.numel != numel) {
    throw std::invalid_argument("inject_dequantize_incremental_cpu: the tasks' sizes differ from the state's");
  }
  const std::vector<WorkItem> items =
      work_items(tasks, num_tasks, [](const InjectDequantizeTask& t) -> const InjectTask& { return t.inject; });
  const int64_t num_items = static_cast<int64_t>(items.size());
  state.touched.resize(items.size());
  if (expected * kListedFraction >= total) {  // a dense pattern: the dense path, nothing listed
    for (auto& touched : state.touched) touched.clear();
    state.dense = true;
    return inject_dequantize_dense(tasks, num_tasks, seed);
  }
  if (state.dense) {
    // After a dense pattern nothing is listed: this pattern starts from clean codes and weights,
    // copied and dequantized whole (the dense path with no errors).
    std::vector<InjectDequantizeTask> clean(tasks, tasks + num_tasks);
    for (auto& task : clean) task.inject.params = BitErrorParams{};
    inject_dequantize_dense(clean.data(), num_tasks, seed);
    state.dense = false;
  }
  for (const auto& touched : state.touched) cost_ns += 5.0 * static_cast<double>(touched.size());
  const SamplerIsa& isa = sampler_isa();
  const int64_t claim = items_per_claim(num_items);
  int64_t changed = 0;
  // The lists grow as patterns are drawn, so an item may fail to allocate: the exception must not
  // leave the parallel region (std::terminate), so it is kept and thrown after it.
  std::exception_ptr failure;
#pragma omp parallel for schedule(dynamic, claim) reduction(+ : changed) if (num_items > 1 && cost_ns > kParallelCostNs)
  for (int64_t i = 0; i < num_items; ++i) {
    try {
      const WorkItem& item = items[i];
      const InjectDequantizeTask& task = tasks[item.task];
      const int64_t begin = item.first_chunk * kChunkElements;
      std::vector<uint32_t>& touched = state.touched[static_cast<size_t>(i)];
      // Restores the previous pattern's elements and appends the new pattern's, then dequantizes
      // both: the first get their clean weights back (or the new pattern's, if it changes them too).
      const size_t previous = touched.size();
      if (task.inject.elem_bytes == 1) {
        changed += isa.incremental_item[0](task.inject, item, seed, &touched, task.weights);
        dequantize_listed<uint8_t>(task, begin, touched);
      } else {
        changed += isa.incremental_item[1](task.inject, item, seed, &touched, task.weights);
        dequantize_listed<uint16_t>(task, begin, touched);
      }
      touched.erase(touched.begin(), touched.begin() + static_cast<std::ptrdiff_t>(previous));
    } catch (...) {
#pragma omp critical(bitrobust_incremental_failure)
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) {
    // The half-applied pattern leaves codes and weights that no list describes: the next pattern
    // starts from clean ones, as after a dense pattern.
    state.dense = true;
    for (auto& touched : state.touched) touched.clear();
    std::rethrow_exception(failure);
  }
  return changed;
}

std::vector<std::string> cpu_sampler_isas() {
  std::vector<std::string> names;
  for (const SamplerIsa& isa : kSamplerIsas) {
    if (isa.supported()) names.push_back(isa.name);
  }
  return names;
}

std::string cpu_sampler_isa() { return sampler_isa().name; }

void set_cpu_sampler_isa(const std::string& name) {
  for (int i = 0; i < kNumSamplerIsas; ++i) {
    if (name == kSamplerIsas[i].name && kSamplerIsas[i].supported()) {
      g_sampler_isa.store(i, std::memory_order_relaxed);
      return;
    }
  }
  std::string known;
  for (const std::string& n : cpu_sampler_isas()) known += (known.empty() ? "" : ", ") + n;
  throw std::invalid_argument("set_cpu_sampler_isa: '" + name + "' is not an instruction set this CPU can run (" +
                              known + ")");
}

std::vector<SelectedBit> draw_selected_bits(int64_t numel, const BitErrorParams& params, uint64_t seed,
                                            int64_t param_index) {
  std::vector<SelectedBit> selected;
  if (params.bit_count > 32 || params.bit_lo < 0 || params.bit_lo + params.bit_count > 32) {
    throw std::invalid_argument("draw_selected_bits: bit range outside 32 bits");
  }
  sampler_isa().draw(numel, params, seed, param_index, selected);
  return selected;
}

namespace {
template <typename T>
int64_t apply_selected(T* codes, const SelectedBit* bits, int64_t count) {
  int64_t changed = 0;
  for (int64_t i = 0; i < count; ++i) {
    T& code = codes[bits[i].element];
    const T mask = static_cast<T>(T{1} << bits[i].bit);
    T next = code;
    switch (bits[i].kind) {
      case FlipKind::Flip: next = static_cast<T>(code ^ mask); break;
      case FlipKind::Set0: next = static_cast<T>(code & ~mask); break;
      case FlipKind::Set1: next = static_cast<T>(code | mask); break;
    }
    changed += next != code;
    code = next;
  }
  return changed;
}
}  // namespace

int64_t apply_selected_bits_cpu(void* codes, int32_t elem_bytes, const SelectedBit* bits, int64_t count) {
  switch (elem_bytes) {
    case 1: return apply_selected(static_cast<uint8_t*>(codes), bits, count);
    case 2: return apply_selected(static_cast<uint16_t*>(codes), bits, count);
    case 4: return apply_selected(static_cast<uint32_t*>(codes), bits, count);
    default: throw std::invalid_argument("apply_selected_bits_cpu: elem_bytes must be 1, 2 or 4");
  }
}

}  // namespace bitrobust::bits
