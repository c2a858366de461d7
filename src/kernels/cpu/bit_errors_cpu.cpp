// CPU kernels for bit error injection; see NOTE [Bit error sampling].
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "bitrobust/bits/bit_errors_kernels.h"

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

// Chunks per OpenMP work item: large enough that the copy is one long memcpy, small enough to stay
// in L2 between the copy and the flips and to balance two threads on small tensors.
constexpr int64_t kChunksPerItem = 32;

struct WorkItem {
  int64_t task;
  int64_t first_chunk;
  int64_t num_chunks;
};

template <typename T>
int64_t inject_item(const InjectTask& task, const WorkItem& item, uint64_t seed) {
  const int64_t begin = item.first_chunk * kChunkElements;
  const int64_t end = std::min(task.numel, (item.first_chunk + item.num_chunks) * kChunkElements);
  const T* clean = static_cast<const T*>(task.clean);
  T* out = static_cast<T*>(task.out);
  if (clean != out) std::memcpy(out + begin, clean + begin, static_cast<size_t>(end - begin) * sizeof(T));
  const BitErrorParams& params = task.params;
  if (!params.active()) return 0;
  // First uniform of every chunk in one pass of independent work (no branches between chunks), so
  // the Philox rounds of neighbouring chunks overlap; most chunks end here at low rates.
  const uint64_t prefix = param_key_prefix(seed, task.param_index);
  uint64_t keys[kChunksPerItem];
  double first_v[kChunksPerItem];
  for (int64_t k = 0; k < item.num_chunks; ++k) {
    keys[k] = chunk_key(prefix, item.first_chunk + k);
    first_v[k] = first_chunk_uniform(keys[k]);
  }
  int64_t changed = 0;
  for (int64_t k = 0; k < item.num_chunks; ++k) {
    if (first_v[k] <= params.empty_chunk_v_max) continue;  // NOTE [Empty chunk shortcut]
    const int64_t c = item.first_chunk + k;
    T* chunk = out + c * kChunkElements;
    const int64_t valid = std::min<int64_t>(kChunkElements, task.numel - c * kChunkElements);
    for_each_selected_bit<chunk_bitmap_words(8 * sizeof(T)), 0>(
        params, keys[k], [&](int32_t element, int32_t bit, double s) {
          if (element >= valid) return;
          const T mask = static_cast<T>(T{1} << bit);
          const bool one = (chunk[element] & mask) != 0;
          if (one ? s < params.threshold_1to0 : s < params.threshold_0to1) {
            chunk[element] = static_cast<T>(chunk[element] ^ mask);
            ++changed;
          }
        });
  }
  return changed;
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

int64_t inject_bit_errors_cpu(const InjectTask* tasks, int64_t num_tasks, uint64_t seed) {
  std::vector<WorkItem> items;
  for (int64_t t = 0; t < num_tasks; ++t) {
    check_task(tasks[t]);
    const int64_t chunks = (tasks[t].numel + kChunkElements - 1) / kChunkElements;
    for (int64_t c = 0; c < chunks; c += kChunksPerItem) {
      items.push_back({t, c, std::min(kChunksPerItem, chunks - c)});
    }
  }
  const int64_t num_items = static_cast<int64_t>(items.size());
  // Rough cost in ns (copy, one Philox block per chunk, ~25 ns per selected bit): below ~0.2 ms a
  // second thread costs more to wake and join than it saves.
  double cost_ns = 0.0;
  for (int64_t t = 0; t < num_tasks; ++t) {
    const InjectTask& task = tasks[t];
    cost_ns += 0.025 * static_cast<double>(task.numel * task.elem_bytes);
    if (task.params.active()) {
      const double t_max = task.params.threshold_max();
      cost_ns += 10.0 * static_cast<double>(task.numel) / kChunkElements +
                 25.0 * static_cast<double>(task.numel) * task.params.bit_count * (t_max < 1.0 ? t_max : 1.0);
    }
  }
  int64_t changed = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : changed) if (num_items > 1 && cost_ns > 2e5)
  for (int64_t i = 0; i < num_items; ++i) {
    const InjectTask& task = tasks[items[i].task];
    switch (task.elem_bytes) {
      case 1: changed += inject_item<uint8_t>(task, items[i], seed); break;
      case 2: changed += inject_item<uint16_t>(task, items[i], seed); break;
      default: changed += inject_item<uint32_t>(task, items[i], seed); break;
    }
  }
  return changed;
}

std::vector<SelectedBit> draw_selected_bits(int64_t numel, const BitErrorParams& params, uint64_t seed,
                                            int64_t param_index) {
  std::vector<SelectedBit> selected;
  if (params.bit_count > 32 || params.bit_lo < 0 || params.bit_lo + params.bit_count > 32) {
    throw std::invalid_argument("draw_selected_bits: bit range outside 32 bits");
  }
  const int64_t chunks = (numel + kChunkElements - 1) / kChunkElements;
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t base = c * kChunkElements;
    for_each_selected_bit<chunk_bitmap_words(32), 0>(
        params, seed, param_index, c, [&](int32_t element, int32_t bit, double s) {
          if (base + element < numel) selected.push_back({base + element, bit, params.kind_of(s)});
        });
  }
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
