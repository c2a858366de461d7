// Device-neutral entry points: validate, compute ranges (on the tensor's device), allocate, dispatch
// to the CPU kernels or their CUDA twins (src/kernels/{cpu,cuda}/quantize_*).
#include "bitrobust/quant/quantizer.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "bitrobust/common/error.h"
#include "bitrobust/config.h"
#include "bitrobust/quant/quantize_math.h"

#ifdef BITROBUST_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace bitrobust::quant {
namespace {

static_assert(sizeof(kernels::QuantRange) == 2 * sizeof(float),
              "ranges tensors [channels, 2] are read as QuantRange arrays");

void check_float_tensor(const at::Tensor& w, const std::string& name, const char* what) {
  BR_CHECK(w.defined(), what, ": tensor '", name, "' is undefined");
  BR_CHECK(w.scalar_type() == at::kFloat, what, ": tensor '", name, "' has dtype ",
           at::toString(w.scalar_type()), "; only float32 tensors can be quantized");
  BR_CHECK(w.is_cpu() || w.is_cuda(), what, ": tensor '", name, "' is on ", w.device().str(),
           "; only CPU and CUDA tensors are supported");
#ifndef BITROBUST_WITH_CUDA
  BR_CHECK(!w.is_cuda(), what, ": tensor '", name, "' is on ", w.device().str(),
           " but bitrobust was built without CUDA");
#endif
}

[[noreturn]] void throw_not_finite(const std::string& name) {
  throw Error(detail::concat("cannot quantize tensor '", name,
                             "': it holds NaN or infinite values"));
}

void check_magnitude(float min_w, float max_w, const std::string& name) {
  BR_CHECK(min_w >= -kernels::kMaxQuantMagnitude && max_w <= kernels::kMaxQuantMagnitude, "cannot quantize tensor '",
           name, "': it holds values beyond ±1e30 (", min_w, " to ", max_w, ")");
}

const kernels::QuantRange* range_ptr(const at::Tensor& ranges) {
  return reinterpret_cast<const kernels::QuantRange*>(ranges.data_ptr<float>());
}

#ifdef BITROBUST_WITH_CUDA
void* stream_of(const at::Tensor& t) {
  return at::cuda::getCurrentCUDAStream(t.device().index()).stream();
}
#endif

/// Per-channel minimum and maximum of w (contiguous, float32) on the host; throws when not finite.
void channel_minmax(const at::Tensor& w, int64_t channels, const std::string& name,
                    std::vector<float>& mins, std::vector<float>& maxs) {
  mins.assign(channels, 0.0f);
  maxs.assign(channels, 0.0f);
  if (w.numel() == 0 || channels == 0) return;
  if (w.is_cpu()) {
    if (!kernels::minmax_cpu(w.data_ptr<float>(), w.numel(), channels, mins.data(), maxs.data())) {
      throw_not_finite(name);
    }
    for (int64_t c = 0; c < channels; ++c) check_magnitude(mins[c], maxs[c], name);
    return;
  }
  // CUDA tensors normally take the device path (compute_ranges); this one serves builds without our
  // CUDA kernels. Torch's reduction propagates NaN into min and max.
  const auto minmax = at::aminmax(w.reshape({channels, -1}), 1);
  const at::Tensor host = at::stack({std::get<0>(minmax), std::get<1>(minmax)}, 1).cpu();
  const float* values = host.data_ptr<float>();
  for (int64_t c = 0; c < channels; ++c) {
    mins[c] = values[2 * c];
    maxs[c] = values[2 * c + 1];
    if (!std::isfinite(mins[c]) || !std::isfinite(maxs[c])) throw_not_finite(name);
    check_magnitude(mins[c], maxs[c], name);
  }
}

/// NOTE [Range rows]: every range follows from its channel's minimum and maximum by one rule,
/// kernels::range_of_channel, compiled for the host and for CUDA, so the CPU and the GPU see the
/// same floats. Symmetric q follows NOTE [Where epsilon goes] (quantize_math.h): the bound with ε
/// included is rounded to float once, as the reference's clamp bound is. CPU tensors compute min
/// and max on the host (and throw for NaN); CUDA tensors compute the whole range on the device, so
/// quantization-aware training does not synchronise with the host per parameter and step.
kernels::RangeRule range_rule(const QuantScheme& s) {
  kernels::RangeRule rule;
  rule.clip = s.clip;
  rule.global_q = s.clip > 0.0f ? std::min(s.global_q, s.clip) : s.global_q;
  rule.kind = s.source == RangeSource::Global ? kernels::RangeRule::kGlobal
              : s.asymmetric                  ? kernels::RangeRule::kAsymmetric
                                              : kernels::RangeRule::kSymmetric;
  return rule;
}

at::Tensor ranges_from_minmax(const std::vector<float>& mins, const std::vector<float>& maxs,
                              const QuantScheme& s) {
  const int64_t channels = static_cast<int64_t>(mins.size());
  at::Tensor ranges = at::empty({channels, 2}, at::TensorOptions().dtype(at::kFloat));
  auto* rows = reinterpret_cast<kernels::QuantRange*>(ranges.data_ptr<float>());
  const kernels::RangeRule rule = range_rule(s);
  for (int64_t c = 0; c < channels; ++c) rows[c] = kernels::range_of_channel(mins[c], maxs[c], rule);
  return ranges;
}

void check_ranges(const at::Tensor& ranges, const at::Tensor& w, int64_t channels,
                  const std::string& name, const char* what) {
  BR_CHECK(ranges.defined() && ranges.scalar_type() == at::kFloat && ranges.dim() == 2 &&
               ranges.size(0) == channels && ranges.size(1) == 2,
           what, ": ranges for tensor '", name, "' must be float32 [", channels, ", 2], got ",
           ranges.defined() ? ranges.sizes() : at::IntArrayRef{});
  BR_CHECK(ranges.device() == w.device(), what, ": ranges for tensor '", name, "' are on ",
           ranges.device().str(), " but the tensor is on ", w.device().str());
}

/// Runs the fused kernel: out may alias w; both contiguous.
void run_quantize_dequantize(const at::Tensor& w, const at::Tensor& ranges, int64_t channels,
                             const kernels::QuantFormat& f, at::Tensor& out) {
  if (w.numel() == 0) return;
  if (w.is_cpu()) {
    kernels::quantize_dequantize_cpu(w.data_ptr<float>(), w.numel(), channels, range_ptr(ranges), f,
                                     out.data_ptr<float>());
    return;
  }
#ifdef BITROBUST_WITH_CUDA
  const c10::cuda::CUDAGuard guard(w.device());
  kernels::quantize_dequantize_cuda(w.data_ptr<float>(), w.numel(), channels, range_ptr(ranges), f,
                                    out.data_ptr<float>(), stream_of(w));
#endif
}

/// Checks that w is finite when its ranges were given (compute_ranges checks otherwise).
void check_finite(const at::Tensor& w, const std::string& name) {
  if (w.numel() == 0) return;
  if (w.is_cpu()) {
    float lo = 0.0f, hi = 0.0f;
    if (!kernels::minmax_cpu(w.data_ptr<float>(), w.numel(), 1, &lo, &hi)) throw_not_finite(name);
  } else if (!at::isfinite(w).all().item<bool>()) {
    throw_not_finite(name);
  }
}

QuantizedTensor quantize_checked(const at::Tensor& w, const at::Tensor& ranges,
                                 const QuantScheme& s, int64_t channels) {
  QuantizedTensor q;
  q.format = s.format();
  q.scheme = s;
  q.channels = channels;
  q.ranges = ranges;
  q.codes = at::empty(w.sizes(), w.options().dtype(s.bits <= 8 ? at::kByte : at::kShort));
  if (w.numel() == 0) return q;
  if (w.is_cpu()) {
    kernels::quantize_cpu(w.data_ptr<float>(), w.numel(), channels, range_ptr(ranges), q.format,
                          q.codes.data_ptr());
    return q;
  }
#ifdef BITROBUST_WITH_CUDA
  const c10::cuda::CUDAGuard guard(w.device());
  kernels::quantize_cuda(w.data_ptr<float>(), w.numel(), channels, range_ptr(ranges), q.format,
                         q.codes.data_ptr(), stream_of(w));
#endif
  return q;
}

}  // namespace

// A vector (bias, normalization scale or shift) takes one range under `channel` too: a range per
// element would make every element its own constant channel (asymmetric: lo = hi = w), which
// dequantizes to w whatever its bits are, so bit errors would never reach these parameters.
int64_t range_channels(const at::Tensor& w, const QuantScheme& s) {
  if (s.source != RangeSource::Channel || w.dim() <= 1) return 1;
  return w.size(0);
}

at::Tensor compute_ranges(const at::Tensor& w, const QuantScheme& s, const std::string& name) {
  s.validate();
  check_float_tensor(w, name, "compute_ranges");
  const at::Tensor contiguous = w.contiguous();
  const int64_t channels = range_channels(w, s);
  if (w.is_cuda() && w.numel() > 0) {
#ifdef BITROBUST_WITH_CUDA
    at::Tensor ranges = at::empty({channels, 2}, w.options().dtype(at::kFloat));
    const c10::cuda::CUDAGuard guard(w.device());
    kernels::compute_ranges_cuda(contiguous.data_ptr<float>(), contiguous.numel(), channels, range_rule(s),
                                 reinterpret_cast<kernels::QuantRange*>(ranges.data_ptr<float>()), stream_of(w));
    return ranges;
#endif
  }
  std::vector<float> mins, maxs;
  channel_minmax(contiguous, channels, name, mins, maxs);
  const at::Tensor ranges = ranges_from_minmax(mins, maxs, s);
  return w.is_cpu() ? ranges : ranges.to(w.device());
}

QuantizedTensor quantize(const at::Tensor& w, const QuantScheme& s, const std::string& name) {
  const at::Tensor ranges = compute_ranges(w, s, name);  // validates s and w, checks finiteness
  return quantize_checked(w.contiguous(), ranges, s, range_channels(w, s));
}

QuantizedTensor quantize_with_ranges(const at::Tensor& w, const at::Tensor& ranges,
                                     const QuantScheme& s, const std::string& name) {
  s.validate();
  check_float_tensor(w, name, "quantize");
  const int64_t channels = range_channels(w, s);
  check_ranges(ranges, w, channels, name, "quantize");
  const at::Tensor contiguous = w.contiguous();
  check_finite(contiguous, name);
  return quantize_checked(contiguous, ranges.contiguous(), s, channels);
}

namespace {

void check_dequantize_args(const QuantizedTensor& q, const at::Tensor& out) {
  const at::ScalarType code_type = q.format.bits <= 8 ? at::kByte : at::kShort;
  BR_CHECK(q.format.bits >= 2 && q.format.bits <= 16,
           "dequantize: quantization bits must be in 2..16, got ", q.format.bits);
  BR_CHECK(q.codes.defined() && q.codes.scalar_type() == code_type, "dequantize: ", q.format.bits,
           "-bit codes must be ", at::toString(code_type), ", got ",
           q.codes.defined() ? at::toString(q.codes.scalar_type()) : "an undefined tensor");
  BR_CHECK(out.defined() && out.scalar_type() == at::kFloat && out.is_contiguous() &&
               out.numel() == q.codes.numel() && out.device() == q.codes.device(),
           "dequantize: the output must be a contiguous float32 tensor of ", q.codes.numel(),
           " elements on ", q.codes.device().str());
  const int64_t n = q.codes.numel();
  BR_CHECK(n == 0 || (q.channels >= 1 && n % q.channels == 0), "dequantize: ", n,
           " codes do not split into ", q.channels, " channels");
  check_ranges(q.ranges, q.codes, q.channels, "codes", "dequantize");
#ifndef BITROBUST_WITH_CUDA
  BR_CHECK(q.codes.is_cpu(), "dequantize: codes are on ", q.codes.device().str(),
           " but bitrobust was built without CUDA");
#endif
}

}  // namespace

void dequantize_into(const QuantizedTensor& q, at::Tensor& out) {
  std::vector<at::Tensor> outs{out};
  dequantize_many_into({q}, outs);
}

void dequantize_many_into(const std::vector<QuantizedTensor>& qs, std::vector<at::Tensor>& outs) {
  BR_CHECK(qs.size() == outs.size(), "dequantize: ", qs.size(), " code tensors but ", outs.size(), " outputs");
  // The contiguous views must live until the kernels have read them (CUDA launches are asynchronous;
  // the caching allocator orders a freed block's reuse on the stream).
  std::vector<at::Tensor> keep;
  keep.reserve(2 * qs.size());
  std::vector<kernels::DequantizeTask> tasks;
  for (size_t i = 0; i < qs.size(); ++i) {
    const QuantizedTensor& q = qs[i];
    check_dequantize_args(q, outs[i]);
    if (q.codes.numel() == 0) continue;
    BR_CHECK(keep.empty() || q.codes.device() == keep.front().device(), "dequantize: code tensors on ",
             keep.empty() ? "" : keep.front().device().str(), " and ", q.codes.device().str(), " in one call");
    keep.push_back(q.codes.contiguous());
    const at::Tensor& codes = keep.back();
    keep.push_back(q.ranges.contiguous());
    const at::Tensor& ranges = keep.back();
    tasks.push_back({codes.data_ptr(), codes.numel(), q.channels, range_ptr(ranges), q.format,
                     outs[i].data_ptr<float>()});
  }
  if (tasks.empty()) return;
  const int64_t count = static_cast<int64_t>(tasks.size());
  if (keep.front().is_cpu()) {
    kernels::dequantize_many_cpu(tasks.data(), count);
    return;
  }
#ifdef BITROBUST_WITH_CUDA
  const c10::cuda::CUDAGuard guard(keep.front().device());
  kernels::dequantize_many_cuda(tasks.data(), count, stream_of(keep.front()));
#endif
}

at::Tensor dequantize(const QuantizedTensor& q) {
  at::Tensor out = at::empty(q.codes.sizes(), q.codes.options().dtype(at::kFloat));
  dequantize_into(q, out);
  return out;
}

at::Tensor fake_quantize_into(const at::Tensor& w, at::Tensor& out, const QuantScheme& s,
                              const std::string& name) {
  const at::Tensor ranges = compute_ranges(w, s, name);  // validates s and w
  BR_CHECK(out.defined() && out.scalar_type() == at::kFloat && out.is_contiguous() &&
               out.numel() == w.numel() && out.device() == w.device(),
           "fake_quantize: the output for tensor '", name, "' must be a contiguous float32 tensor of ",
           w.numel(), " elements on ", w.device().str());
  run_quantize_dequantize(w.contiguous(), ranges, range_channels(w, s), s.format(), out);
  return ranges;
}

void fake_quantize_(at::Tensor& w, const QuantScheme& s, const std::string& name) {
  if (w.is_contiguous()) {
    fake_quantize_into(w, w, s, name);
  } else {
    w.detach().copy_(fake_quantize(w, s, name));
  }
}

at::Tensor fake_quantize(const at::Tensor& w, const QuantScheme& s, const std::string& name) {
  check_float_tensor(w, name, "fake_quantize");
  at::Tensor out = at::empty(w.sizes(), w.options().memory_format(at::MemoryFormat::Contiguous));
  fake_quantize_into(w, out, s, name);
  return out;
}

namespace {

/// Checks what the multi-tensor functions need: contiguous float32 tensors on one device.
void check_many(const std::vector<at::Tensor>& ts, const std::vector<std::string>& names, const char* what) {
  for (size_t i = 0; i < ts.size(); ++i) {
    const std::string name = i < names.size() ? names[i] : "tensor " + std::to_string(i);
    check_float_tensor(ts[i], name, what);
    BR_CHECK(ts[i].is_contiguous(), what, ": tensor '", name, "' is not contiguous");
    BR_CHECK(ts[i].device() == ts.front().device(), what, ": tensor '", name, "' is on ", ts[i].device().str(),
             ", the first on ", ts.front().device().str());
  }
}

}  // namespace

void fake_quantize_many_(const std::vector<at::Tensor>& ws, std::vector<at::Tensor>* masters, const QuantScheme& s,
                         const std::vector<std::string>& names, at::Tensor& ranges) {
  s.validate();
  check_many(ws, names, "fake_quantize");
  if (ws.empty()) return;
  const at::Device device = ws.front().device();
  if (masters != nullptr) {
    masters->resize(ws.size());
    for (size_t i = 0; i < ws.size(); ++i) {
      at::Tensor& m = (*masters)[i];
      if (!m.defined() || m.device() != device || !m.sizes().equals(ws[i].sizes()) || !m.is_contiguous() ||
          m.scalar_type() != at::kFloat) {
        m = at::empty(ws[i].sizes(), ws[i].options().memory_format(at::MemoryFormat::Contiguous));
      }
    }
  }
  // A tensor of shape [0, ...] under per-channel ranges has no channels: nothing to do, no rows.
  std::vector<kernels::FakeQuantizeTask> tasks;
  std::vector<std::string> task_names;
  int64_t channels = 0;
  for (size_t i = 0; i < ws.size(); ++i) {
    if (range_channels(ws[i], s) == 0) continue;
    task_names.push_back(i < names.size() ? names[i] : "tensor " + std::to_string(i));
    kernels::FakeQuantizeTask& task = tasks.emplace_back();
    task.w = ws[i].data_ptr<float>();
    task.master = masters != nullptr ? (*masters)[i].data_ptr<float>() : nullptr;
    task.out = ws[i].data_ptr<float>();
    task.n = ws[i].numel();
    task.channels = range_channels(ws[i], s);
    task.rule = range_rule(s);
    task.format = s.format();
    channels += task.channels;
  }
  if (!ranges.defined() || ranges.device() != device || ranges.scalar_type() != at::kFloat ||
      !ranges.sizes().equals({channels, 2}) || !ranges.is_contiguous()) {
    ranges = at::empty({channels, 2}, at::TensorOptions().dtype(at::kFloat).device(device));
  }
  auto* rows = reinterpret_cast<kernels::QuantRange*>(ranges.data_ptr<float>());
  const int64_t count = static_cast<int64_t>(tasks.size());
  if (device.is_cpu()) {
    const int64_t bad = kernels::fake_quantize_many_cpu(tasks.data(), count, rows);
    if (bad >= 0) throw_not_finite(task_names[static_cast<size_t>(bad)]);
    return;
  }
#ifdef BITROBUST_WITH_CUDA
  const c10::cuda::CUDAGuard guard(device);
  kernels::fake_quantize_many_cuda(tasks.data(), count, rows, stream_of(ws.front()));
#endif
}

void quantize_many_into(const std::vector<at::Tensor>& ws, const at::Tensor& ranges, const QuantScheme& s,
                        std::vector<at::Tensor>& codes) {
  s.validate();
  check_many(ws, {}, "quantize");
  codes.resize(ws.size());
  if (ws.empty()) return;
  const at::Device device = ws.front().device();
  int64_t channels = 0;
  for (const at::Tensor& w : ws) channels += range_channels(w, s);
  BR_CHECK(ranges.defined() && ranges.scalar_type() == at::kFloat && ranges.is_contiguous() &&
               ranges.sizes().equals({channels, 2}) && ranges.device() == device,
           "quantize: the ranges of ", ws.size(), " tensors must be a contiguous float32 [", channels, ", 2] tensor on ",
           device.str());
  const at::ScalarType code_type = s.bits <= 8 ? at::kByte : at::kShort;
  const auto* rows = reinterpret_cast<const kernels::QuantRange*>(ranges.data_ptr<float>());
  std::vector<kernels::QuantizeTask> tasks;
  for (size_t i = 0; i < ws.size(); ++i) {
    at::Tensor& c = codes[i];
    if (!c.defined() || c.device() != device || c.scalar_type() != code_type || !c.sizes().equals(ws[i].sizes()) ||
        !c.is_contiguous()) {
      c = at::empty(ws[i].sizes(), ws[i].options().dtype(code_type).memory_format(at::MemoryFormat::Contiguous));
    }
    const int64_t ch = range_channels(ws[i], s);
    if (ch == 0) continue;  // [0, ...] under per-channel ranges: no codes, no rows
    tasks.push_back({ws[i].data_ptr<float>(), ws[i].numel(), ch, rows, s.format(), c.data_ptr()});
    rows += ch;
  }
  const int64_t count = static_cast<int64_t>(tasks.size());
  if (device.is_cpu()) {
    kernels::quantize_many_cpu(tasks.data(), count);
    return;
  }
#ifdef BITROBUST_WITH_CUDA
  const c10::cuda::CUDAGuard guard(device);
  kernels::quantize_many_cuda(tasks.data(), count, stream_of(ws.front()));
#endif
}

void copy_clamped_many_(const std::vector<at::Tensor>& srcs, const std::vector<at::Tensor>& dsts, float bound,
                        const std::vector<at::Tensor>* average_with, bool positive_zero) {
  BR_CHECK(srcs.size() == dsts.size(), "copy_clamped: ", srcs.size(), " sources but ", dsts.size(), " destinations");
  check_many(srcs, {}, "copy_clamped");
  check_many(dsts, {}, "copy_clamped");
  if (average_with != nullptr) {
    BR_CHECK(average_with->size() == srcs.size(), "copy_clamped: ", srcs.size(), " sources but ",
             average_with->size(), " tensors to average with");
    check_many(*average_with, {}, "copy_clamped");
  }
  if (srcs.empty()) return;
  BR_CHECK(srcs.front().device() == dsts.front().device() &&
               (average_with == nullptr || average_with->front().device() == srcs.front().device()),
           "copy_clamped: sources on ", srcs.front().device().str(), ", destinations on ", dsts.front().device().str());
  std::vector<kernels::CopyClampTask> tasks(srcs.size());
  for (size_t i = 0; i < srcs.size(); ++i) {
    BR_CHECK(srcs[i].numel() == dsts[i].numel() && (average_with == nullptr || (*average_with)[i].numel() == srcs[i].numel()),
             "copy_clamped: tensor ", i, " has ", srcs[i].numel(), " elements, its destination ", dsts[i].numel());
    tasks[i] = {srcs[i].data_ptr<float>(), dsts[i].data_ptr<float>(), srcs[i].numel(), bound, positive_zero,
                average_with != nullptr ? (*average_with)[i].data_ptr<float>() : nullptr};
  }
  const int64_t count = static_cast<int64_t>(tasks.size());
  if (srcs.front().is_cpu()) {
    kernels::copy_clamped_many_cpu(tasks.data(), count);
    return;
  }
#ifdef BITROBUST_WITH_CUDA
  const c10::cuda::CUDAGuard guard(srcs.front().device());
  kernels::copy_clamped_many_cuda(tasks.data(), count, stream_of(srcs.front()));
#endif
}

void clip_weights_(at::Tensor& w, const QuantScheme& s) {
  if (s.clip > 0.0f) w.detach().clamp_(-s.clip, s.clip);
}

}  // namespace bitrobust::quant
