#include "bitrobust/quant/model_quantization.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>

#include "bitrobust/common/error.h"
#include "bitrobust/io/model_file.h"
#include "bitrobust/quant/quantize_math.h"

namespace bitrobust::quant {

namespace {
std::vector<std::pair<std::string, at::Tensor>> selected_parameters(models::Classifier& net, const ParamSelector& sel) {
  sel.validate();
  std::vector<std::string> names;
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : net.named_parameters()) {
    names.push_back(item.key());
    if (sel.selects(item.key())) out.emplace_back(item.key(), item.value());
  }
  sel.check_every_pattern_matches(names);
  BR_CHECK(!out.empty(), "no parameter matches the quantization selection (--quant-include ",
           nlohmann::json(sel.include).dump(), ", --quant-exclude ", nlohmann::json(sel.exclude).dump(), ")");
  return out;
}

/// Stored ranges must be ones the scheme can produce (NOTE [Range rows]: kernels::range_of_channel):
/// a range edited in the file, or read under another scheme, would otherwise dequantize every code
/// of its tensor to other weights without an error.
void check_ranges_follow_scheme(const at::Tensor& ranges, const QuantScheme& s, const std::string& what) {
  if (ranges.size(0) == 0) return;
  const at::Tensor lo = ranges.select(1, 0), hi = ranges.select(1, 1);
  const bool clipped = s.clip > 0.0f;
  if (s.source == RangeSource::Global) {
    const float q = clipped ? std::min(s.global_q, s.clip) : s.global_q;
    BR_CHECK((lo == -q).all().item<bool>() && (hi == q).all().item<bool>(), what, " are not [", -q, ", ", q,
             "], the global range of the scheme ", s.to_string(), " (damaged or edited file)");
    return;
  }
  if (!s.asymmetric) {
    BR_CHECK((lo == -hi).all().item<bool>() && (hi > 0).all().item<bool>(), what,
             " are not symmetric ranges [-q, q] with q > 0, as the scheme ", s.to_string(),
             " makes them (damaged or edited file)");
  }
  BR_CHECK(!clipped || ((lo >= -s.clip).all().item<bool>() && (hi <= s.clip).all().item<bool>()), what,
           " reach beyond the clip bound ", s.clip, " of the scheme ", s.to_string(), " (damaged or edited file)");
}
}  // namespace

int64_t QuantizedModel::total_weights() const {
  int64_t n = 0;
  for (const auto& t : tensors) n += t.codes.numel();
  return n;
}

int64_t QuantizedModel::total_bits() const { return total_weights() * scheme.bits; }

nlohmann::json QuantizedModel::describe() const {
  nlohmann::json params_json = nlohmann::json::array();
  for (size_t i = 0; i < names.size(); ++i) {
    const auto& t = tensors[i];
    params_json.push_back({{"name", names[i]},
                           {"shape", t.codes.sizes().vec()},
                           {"channels", t.channels},
                           {"bits", t.format.bits},
                           {"container", t.format.bits <= 8 ? "uint8" : "uint16"},
                           {"signed", t.format.is_signed}});
  }
  return {{"scheme", scheme.to_string()},
          {"include", selector.include},
          {"exclude", selector.exclude},
          {"weights", total_weights()},
          {"params", params_json}};
}

void QuantizedModel::load_clean_weights() const { load_weights(tensors); }

void QuantizedModel::load_weights(const std::vector<QuantizedTensor>& codes) const {
  BR_CHECK(codes.size() == params.size(), "load_weights: ", codes.size(), " code tensors for ", params.size(),
           " quantized parameters");
  torch::NoGradGuard no_grad;
  // Float parameters are written in place; others (say a model cast to double) go through a float
  // scratch copy. All in one call: one parallel region on the CPU, one launch per 32 tensors on CUDA.
  float_scratch_.resize(params.size());
  std::vector<at::Tensor> outs(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i];
    if (p.scalar_type() == at::kFloat) {
      outs[i] = p;
      continue;
    }
    at::Tensor& scratch = float_scratch_[i];
    if (!scratch.defined() || scratch.device() != p.device()) scratch = at::empty(p.sizes(), p.options().dtype(at::kFloat));
    outs[i] = scratch;
  }
  dequantize_many_into(codes, outs);
  for (size_t i = 0; i < params.size(); ++i) {
    if (params[i].scalar_type() != at::kFloat) params[i].copy_(float_scratch_[i]);
  }
}

void check_finite_parameters(models::Classifier& net, const std::string& what) {
  for (const auto& item : net.named_parameters()) {
    BR_CHECK(at::isfinite(item.value()).all().item<bool>(), what, ": parameter ", item.key(),
             " holds NaN or infinite values");
  }
}

QuantizedModel quantize_model(models::Classifier& net, const QuantScheme& scheme, const ParamSelector& selector) {
  scheme.validate();
  QuantizedModel q;
  q.scheme = scheme;
  q.selector = selector;
  torch::NoGradGuard no_grad;
  for (auto& [name, p] : selected_parameters(net, selector)) {
    // The host range path throws for NaN itself; on CUDA ranges are computed on the device, where
    // NaN only propagates (NOTE [Device ranges]), so the one-time check is made here.
    BR_CHECK(p.is_cpu() || at::isfinite(p).all().item<bool>(), "cannot quantize tensor '", name,
             "': it holds NaN or infinite values");
    BR_CHECK(p.is_cpu() || p.numel() == 0 || p.abs().max().item<float>() <= kernels::kMaxQuantMagnitude,
             "cannot quantize tensor '", name, "': it holds values beyond ±1e30");
    q.names.push_back(name);
    q.params.push_back(p);
    q.tensors.push_back(quantize(p.detach(), scheme, name));
  }
  return q;
}

void store_in_model_file(const QuantizedModel& q, io::ModelFile& file) {
  file.meta["quantization"] = q.describe();
  file.quant_codes.clear();
  file.quant_ranges.clear();
  for (const auto& t : q.tensors) {
    file.quant_codes.push_back(t.codes);
    file.quant_ranges.push_back(t.ranges);
  }
}

namespace {
QuantizedModel read_quantization(io::ModelFile& file, const std::string& where) {
  BR_CHECK(file.meta.contains("quantization"), where, ": the model is not quantized: train with --bits/--scheme, ",
           "or run `bitrobust quantize` first");
  const auto& qj = file.meta["quantization"];
  QuantizedModel q;
  try {
    q.scheme = QuantScheme::parse(qj.at("scheme").get<std::string>());
  } catch (const Error& e) {
    throw Error(where + ": " + e.what());
  }
  q.selector.include = qj.value("include", std::vector<std::string>{});
  q.selector.exclude = qj.value("exclude", std::vector<std::string>{});
  auto named = file.net->named_parameters();
  const auto& params_json = qj.at("params");
  BR_CHECK(params_json.size() == file.quant_codes.size(), where, ": ", params_json.size(),
           " quantized parameters described but ", file.quant_codes.size(), " stored");
  const kernels::QuantFormat format = q.scheme.format();
  const at::ScalarType container = format.bits <= 8 ? at::kByte : at::kShort;
  const int64_t unused_bits = ~((int64_t{1} << format.bits) - 1) & (format.bits <= 8 ? 0xFF : 0xFFFF);
  for (size_t i = 0; i < params_json.size(); ++i) {
    const auto& pj = params_json[i];
    const std::string name = pj.at("name").get<std::string>();
    const at::Tensor* p = named.find(name);
    BR_CHECK(p != nullptr, where, ": quantized parameter ", name, " is not in the network");
    const at::Tensor& codes = file.quant_codes[i];
    BR_CHECK(codes.sizes() == p->sizes(), where, ": codes of ", name, " have shape ", codes.sizes(),
             " but the parameter has ", p->sizes());
    // The description must agree with the scheme and with what is stored (a file edited or damaged
    // in one place only would otherwise be read under the wrong format).
    BR_CHECK(pj.value("bits", -1) == format.bits && pj.value("signed", !format.is_signed) == format.is_signed &&
                 pj.value("shape", std::vector<int64_t>{}) == codes.sizes().vec() &&
                 pj.value("container", std::string()) == (format.bits <= 8 ? "uint8" : "uint16"),
             where, ": the description of ", name, " (", pj.dump(), ") does not match the scheme ",
             q.scheme.to_string(), " and the stored codes of shape ", codes.sizes());
    BR_CHECK(codes.scalar_type() == container, where, ": codes of ", name, " are ", codes.scalar_type(),
             ", expected ", container, " for ", format.bits, "-bit codes");
    BR_CHECK(codes.numel() == 0 || (codes.to(at::kInt).bitwise_and(unused_bits) == 0).all().item<bool>(), where,
             ": codes of ", name, " use bits above the ", format.bits, " bits of the scheme (damaged file)");
    QuantizedTensor t;
    t.codes = codes;
    t.ranges = file.quant_ranges[i].to(at::kFloat);
    t.channels = pj.at("channels").get<int64_t>();
    t.scheme = q.scheme;
    t.format = format;
    BR_CHECK(t.ranges.dim() == 2 && t.ranges.size(0) == t.channels && t.ranges.size(1) == 2, where, ": ranges of ",
             name, " do not have shape [", t.channels, ", 2]");
    // Channels that agree with the stored ranges but not with the scheme would read the codes
    // under another layout (e.g. one range for a per-channel tensor).
    const int64_t scheme_channels = range_channels(*p, q.scheme);
    // Files quantized before 2026-12-04 gave a vector (bias, norm scale) one range per element under
    // per-channel schemes; the codes and ranges still agree, so those files load as they are.
    const bool older_vector_layout =
        q.scheme.source == RangeSource::Channel && p->dim() <= 1 && t.channels == p->numel();
    BR_CHECK(t.channels == scheme_channels || older_vector_layout, where, ": ", name, " is stored with ", t.channels,
             " range channel(s), but the scheme ", q.scheme.to_string(), " gives it ", scheme_channels,
             " (damaged or edited file)");
    BR_CHECK(at::isfinite(t.ranges).all().item<bool>(), where, ": ranges of ", name, " hold NaN or infinite values");
    BR_CHECK(t.channels == 0 || t.ranges.abs().max().item<float>() <= kernels::kMaxQuantMagnitude, where,
             ": ranges of ", name, " reach beyond ±1e30 (damaged file)");
    BR_CHECK(t.channels == 0 || (t.ranges.select(1, 0) <= t.ranges.select(1, 1)).all().item<bool>(), where,
             ": ranges of ", name, " have a lower bound above the upper bound");
    check_ranges_follow_scheme(t.ranges, q.scheme, where + ": ranges of " + name);
    // NOTE [Codes of the float weights]: train and quantize store the codes and ranges that
    // quantize() gives the float weights stored beside them, bit-identical on CPU and CUDA
    // (QuantizerCuda.BitIdenticalToCpu). So they must be those again: a scheme edited to another
    // that accepts the same ranges (global 1.0 read as per-tensor asymmetric) or a range narrowed by
    // hand would otherwise relabel, or change, the network without an error (found by a review).
    if (!older_vector_layout) {
      const QuantizedTensor expected = quantize(p->detach(), q.scheme, name);
      // (.cpu(): a network already moved to a GPU quantizes there, bit-identically)
      BR_CHECK(at::equal(expected.ranges.cpu(), t.ranges.cpu()) && at::equal(expected.codes.cpu(), t.codes.cpu()), where,
               ": the codes and ranges of ", name, " are not those its float weights give under the scheme ",
               q.scheme.to_string(), " (the scheme, the ranges, the codes or the weights were edited; a file an "
               "older bitrobust quantized otherwise can be quantized again from its float weights with "
               "`bitrobust quantize`)");
    }
    // A name listed twice would leave another parameter unquantized and its codes unread.
    BR_CHECK(std::find(q.names.begin(), q.names.end(), name) == q.names.end(), where, ": quantized parameter ",
             name, " is described twice");
    q.names.push_back(name);
    q.params.push_back(*p);
    q.tensors.push_back(std::move(t));
  }
  // The parameters quantized are those the recorded include/exclude patterns select, in the
  // network's order, as every writer stores them. Files written before may hold patterns that
  // std::regex took and RE2 refuses (lookaround), or that matched nothing (accepted before
  // 2026-11-28): for those the check is left out (their names were checked above).
  std::vector<std::string> selected;
  bool patterns_readable = true;
  try {
    for (const auto& item : file.net->named_parameters()) {
      if (q.selector.selects(item.key())) selected.push_back(item.key());
    }
  } catch (const Error&) {
    patterns_readable = false;
  }
  BR_CHECK(!patterns_readable || selected == q.names, where, ": the quantized parameters ", nlohmann::json(q.names).dump(),
           " are not those its quantization.include/exclude patterns select, ", nlohmann::json(selected).dump(),
           " (damaged or edited file)");
  // The count `info` shows and result files record: it must be the codes' count.
  BR_CHECK(!qj.contains("weights") || qj["weights"].get<int64_t>() == q.total_weights(), where,
           ": the metadata counts ", qj.contains("weights") ? qj["weights"].dump() : "", " quantized weights but the ",
           "file stores ", q.total_weights(), " codes (damaged or edited file)");
  return q;
}
}  // namespace

QuantizedModel load_from_model_file(io::ModelFile& file) {
  const std::string where = file.path.empty() ? std::string("model file") : "model file " + file.path;
  try {
    return read_quantization(file, where);
  } catch (const nlohmann::json::exception& e) {  // a field missing or of another type
    throw Error(where + ": the quantization description is malformed (" + json_error_text(e.what()) + ")");
  }
}

QuantAwareTraining::QuantAwareTraining(models::Classifier& net, const QuantScheme& scheme, const ParamSelector& selector)
    : scheme_(scheme) {
  scheme_.validate();
  for (auto& [name, p] : selected_parameters(net, selector)) {
    names_.push_back(name);
    params_.push_back(p);
  }
}

// The masters are allocated where the parameters are at the first step: the trainer moves the
// network to its device after this object is made, and masters left on the host would turn every
// step on a GPU into two synchronous copies of the whole model.
void QuantAwareTraining::use_quantized_weights() {
  torch::NoGradGuard no_grad;
  fake_quantize_many_(params_, &masters_, scheme_, names_, ranges_);
}

void QuantAwareTraining::restore_float_weights() {
  torch::NoGradGuard no_grad;
  BR_CHECK(masters_.size() == params_.size(), "restore_float_weights: use_quantized_weights was not called");
  copy_clamped_many_(masters_, params_, 0.0f);
}

void QuantAwareTraining::clip_weights() {
  if (scheme_.clip <= 0) return;
  torch::NoGradGuard no_grad;
  copy_clamped_many_(params_, params_, scheme_.clip);
}

}  // namespace bitrobust::quant
