// Torch-facing bit error injection: error models, validation, dispatch to the CPU / CUDA kernels.
#include "bitrobust/bits/bit_errors.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>
#include <sstream>

#include "bits/device_dispatch.h"
#include "bitrobust/bits/bit_errors_kernels.h"
#include "bitrobust/common/error.h"

namespace bitrobust::bits {

double parse_rate(const std::string& text, const std::string& option) {
  const bool percent = !text.empty() && text.back() == '%';
  const std::string number = percent ? text.substr(0, text.size() - 1) : text;
  size_t used = 0;
  double value = NAN;
  bool out_of_range = false;
  try {
    value = std::stod(number, &used);
  } catch (const std::out_of_range&) {
    out_of_range = true;  // below the smallest double (1e-400) or above the largest
  } catch (const std::exception&) {
    used = 0;
  }
  BR_CHECK(!out_of_range, option, ": bit error rate ", text, " is too small or too large to represent");
  // stod also reads hexadecimal ("0x0.1" = 1/16): only decimal digits, '.', exponents and signs.
  BR_CHECK(used == number.size() && !number.empty() && number.find_first_not_of("0123456789.eE+-") == std::string::npos,
           option, ": '", text, "' is not a number (write 0.001 or 0.1%)");
  if (percent) {
    // The same decimal with its exponent lowered by 2, rounded once: "0.7%" is the double of
    // "0.007", which value / 100 is not (one ulp below), so both spellings name one rate.
    const size_t e = number.find_first_of("eE");
    long long exponent = 0;
    bool exponent_fits = true;
    if (e != std::string::npos) {
      try {
        exponent = std::stoll(number.substr(e + 1));
        exponent_fits = exponent > std::numeric_limits<long long>::min() + 2;  // room for the - 2
      } catch (const std::exception&) {
        exponent_fits = false;  // only for a zero mantissa: any other one was out of range above
      }
    }
    value = exponent_fits ? std::strtod((number.substr(0, e) + "e" + std::to_string(exponent - 2)).c_str(), nullptr)
                          : value / 100.0;
  }
  BR_CHECK(std::isfinite(value) && value >= 0 && value <= 1, option, ": bit error rate ", text,
           " is outside [0, 1] (0% to 100%)");
  return value + 0.0;  // -0 + 0 = +0: "-0" is not printed or stored as a negative zero
}

namespace {

std::string format_rate(double rate) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.17g", rate);
  // Prefer the shortest text that reads back to the same double.
  for (int digits = 1; digits <= 17; ++digits) {
    char shorter[64];
    std::snprintf(shorter, sizeof shorter, "%.*g", digits, rate);
    if (std::strtod(shorter, nullptr) == rate) return shorter;
  }
  return buffer;
}

void check_rate(const char* what, double rate) {
  BR_CHECK(rate >= 0.0 && rate <= 1.0, "error model: ", what, " must be in [0, 1], got ", rate);
}

bool is_stuck(ErrorKind kind) { return kind == ErrorKind::StuckAt0 || kind == ErrorKind::StuckAt1; }

const char* kKnownNames = "random, msb, lsb<k>, stuck_at_0, stuck_at_1 (optionally ,0to1=<rate> ,1to0=<rate>)";

}  // namespace

ErrorModel ErrorModel::parse(const std::string& name, double rate) {
  ErrorModel model;
  model.rate = rate;
  std::vector<std::string> parts;
  {
    std::stringstream stream(name);
    std::string part;
    while (std::getline(stream, part, ',')) parts.push_back(part);
  }
  BR_CHECK(!parts.empty() && !parts[0].empty(), "error model: empty error model name; known: ", kKnownNames);
  const std::string& kind = parts[0];
  if (kind == "random") {
    model.kind = ErrorKind::Random;
  } else if (kind == "msb") {
    model.kind = ErrorKind::Msb;
  } else if (kind == "stuck_at_0" || kind == "stuck-at-0" || kind == "stuck0") {
    model.kind = ErrorKind::StuckAt0;
  } else if (kind == "stuck_at_1" || kind == "stuck-at-1" || kind == "stuck1") {
    model.kind = ErrorKind::StuckAt1;
  } else if (kind.size() > 3 && kind.compare(0, 3, "lsb") == 0 &&
             kind.find_first_not_of("0123456789", 3) == std::string::npos && kind.size() <= 5) {
    model.kind = ErrorKind::Lsb;
    model.lsb_bits = std::stoi(kind.substr(3));
  } else {
    throw Error("error model: unknown error model '" + name + "'; known: " + kKnownNames);
  }
  // getline drops a last empty part: "random," would pass for "random".
  BR_CHECK(name.empty() || name.back() != ',', "error model: '", name, "' ends with a comma");
  bool seen_0to1 = false, seen_1to0 = false;
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& option = parts[i];
    const auto eq = option.find('=');
    const std::string key = option.substr(0, eq);
    BR_CHECK(eq != std::string::npos && (key == "0to1" || key == "1to0"), "error model: unknown option '", option,
             "' in '", name, "'; expected 0to1=<rate> or 1to0=<rate>");
    const double parsed = parse_rate(option.substr(eq + 1), "error model: " + key + " in '" + name + "'");
    bool& seen = key == "0to1" ? seen_0to1 : seen_1to0;
    BR_CHECK(!seen, "error model: ", key, " is given twice in '", name, "'");
    seen = true;
    (key == "0to1" ? model.rate_0to1 : model.rate_1to0) = parsed;
    BR_CHECK(parsed >= 0.0, "error model: ", key, " rate must be in [0, 1], got ", parsed, " in '", name, "'");
  }
  model.validate();
  return model;
}

void ErrorModel::validate() const {
  check_rate("rate", rate);
  if (rate_0to1 >= 0.0 || rate_0to1 != rate_0to1) check_rate("rate_0to1", rate_0to1);
  if (rate_1to0 >= 0.0 || rate_1to0 != rate_1to0) check_rate("rate_1to0", rate_1to0);
  BR_CHECK(!(is_stuck(kind) && (rate_0to1 >= 0.0 || rate_1to0 >= 0.0)),
           "error model: stuck-at models take a single rate, not 0to1/1to0 rates");
  if (kind == ErrorKind::Lsb) {
    BR_CHECK(lsb_bits >= 1 && lsb_bits <= 32, "error model: lsb model needs 1 <= k <= 32 bits, got ", lsb_bits);
  }
}

std::string ErrorModel::name() const {
  std::string result;
  switch (kind) {
    case ErrorKind::Random: result = "random"; break;
    case ErrorKind::Msb: result = "msb"; break;
    case ErrorKind::Lsb: result = "lsb" + std::to_string(lsb_bits); break;
    case ErrorKind::StuckAt0: result = "stuck_at_0"; break;
    case ErrorKind::StuckAt1: result = "stuck_at_1"; break;
  }
  if (rate_0to1 >= 0.0) result += ",0to1=" + format_rate(rate_0to1);
  if (rate_1to0 >= 0.0) result += ",1to0=" + format_rate(rate_1to0);
  return result;
}

std::string ErrorModel::to_string() const {
  std::string base = name().substr(0, name().find(','));
  if (rate_0to1 >= 0.0 || rate_1to0 >= 0.0) {
    return base + "(p01=" + format_rate(effective_rate_0to1()) + ", p10=" + format_rate(effective_rate_1to0()) + ")";
  }
  return base + "(p=" + format_rate(rate) + ")";
}

double ErrorModel::effective_rate_0to1() const {
  if (kind == ErrorKind::StuckAt0) return 0.0;
  if (kind == ErrorKind::StuckAt1) return rate;
  return rate_0to1 >= 0.0 ? rate_0to1 : rate;
}

double ErrorModel::effective_rate_1to0() const {
  if (kind == ErrorKind::StuckAt0) return rate;
  if (kind == ErrorKind::StuckAt1) return 0.0;
  return rate_1to0 >= 0.0 ? rate_1to0 : rate;
}

BitErrorParams ErrorModel::kernel_params(int bits, int container_bits) const {
  validate();
  BR_CHECK(bits >= 1 && bits <= container_bits, "bit errors: code width must be in [1, ", container_bits,
           "] bits for this container, got ", bits);
  int bit_lo = 0, bit_count = bits;
  if (kind == ErrorKind::Msb) {
    bit_lo = bits - 1;
    bit_count = 1;
  } else if (kind == ErrorKind::Lsb) {
    BR_CHECK(lsb_bits <= bits, "bit errors: ", name(), " needs at least ", lsb_bits, " bits, codes have ", bits);
    bit_count = lsb_bits;
  }
  return make_bit_error_params(bit_lo, bit_count, effective_rate_0to1(), effective_rate_1to0());
}

bool ErrorModel::operator==(const ErrorModel& other) const {
  return name() == other.name() && rate == other.rate;
}

ParamSelector::ParamSelector(const std::string& pattern)
    : pattern_(pattern), regex_(pattern.empty() ? NameRegex() : NameRegex(pattern, "--layers")) {}

bool ParamSelector::selects(const std::string& name) const { return regex_.found_in(name); }

namespace {

InjectTask make_task(const char* what, const at::Tensor& clean, int bits, const BitErrorParams& params,
                     int64_t param_index, at::Tensor& out) {
  const int eb = detail::check_bit_tensor(what, "clean codes", clean);
  BR_CHECK(out.defined(), what, ": out is an undefined tensor");
  detail::check_same_layout(what, clean, out, "clean codes", "out");
  BR_CHECK(clean.is_contiguous() && out.is_contiguous(), what, ": clean codes and out must be contiguous");
  BR_CHECK(bits >= 1 && bits <= 8 * eb, what, ": code width must be in [1, ", 8 * eb, "] for ", clean.scalar_type(),
           " codes, got ", bits);
  BR_CHECK(param_index >= 0, what, ": param_index must be >= 0, got ", param_index);
  InjectTask task;
  task.clean = clean.data_ptr();
  task.out = out.data_ptr();
  task.numel = clean.numel();
  task.param_index = param_index;
  task.elem_bytes = eb;
  task.params = params;
  return task;
}

/// Runs the tasks; returns the bits changed, or 0 without `count` (then CUDA does not synchronise).
int64_t run_tasks(const char* what, const std::vector<InjectTask>& tasks, const at::Tensor& any, uint64_t seed,
                  bool count = true) {
  if (tasks.empty()) return 0;
  if (!any.is_cuda()) return inject_bit_errors_cpu(tasks.data(), static_cast<int64_t>(tasks.size()), seed);
  at::Tensor changed = count ? at::zeros({1}, any.options().dtype(at::kLong)) : at::Tensor();
  detail::on_cuda(what, any, [&](void* stream) {
    inject_bit_errors_cuda(tasks.data(), static_cast<int64_t>(tasks.size()), seed,
                           count ? reinterpret_cast<unsigned long long*>(changed.data_ptr<int64_t>()) : nullptr,
                           stream);
  });
  return count ? changed.item<int64_t>() : 0;
}

}  // namespace

std::vector<InjectTask> inject_tasks(const std::vector<CodeTensor>& tensors, const ErrorModel& model,
                                     const ParamSelector& selector) {
  model.validate();
  std::vector<InjectTask> tasks;
  tasks.reserve(tensors.size());
  for (const CodeTensor& t : tensors) {
    const std::string what = "inject_bit_errors (" + t.name + ")";
    const int eb = detail::check_bit_tensor(what.c_str(), "clean codes", t.clean);
    BR_CHECK(t.clean.device() == tensors.front().clean.device(), "inject_bit_errors: all tensors must be on one "
             "device; ", t.name, " is on ", t.clean.device(), ", ", tensors.front().name, " on ",
             tensors.front().clean.device());
    const BitErrorParams params = selector.selects(t.name) ? model.kernel_params(t.bits, 8 * eb) : BitErrorParams{};
    at::Tensor out = t.out;
    tasks.push_back(make_task(what.c_str(), t.clean, t.bits, params, t.param_index, out));
  }
  return tasks;
}

int64_t inject_bit_errors(const at::Tensor& clean_codes, int bits, const ErrorModel& model, uint64_t seed,
                          int64_t param_index, at::Tensor& out) {
  const int eb = detail::check_bit_tensor("inject_bit_errors", "clean codes", clean_codes);
  const BitErrorParams params = model.kernel_params(bits, 8 * eb);
  const std::vector<InjectTask> tasks = {make_task("inject_bit_errors", clean_codes, bits, params, param_index, out)};
  return run_tasks("inject_bit_errors", tasks, clean_codes, seed);
}

int64_t inject_bit_errors(const std::vector<CodeTensor>& tensors, const ErrorModel& model, uint64_t seed,
                          const ParamSelector& selector) {
  const std::vector<InjectTask> tasks = inject_tasks(tensors, model, selector);
  return tensors.empty() ? 0 : run_tasks("inject_bit_errors", tasks, tensors.front().clean, seed);
}

void inject_bit_errors_async(const std::vector<CodeTensor>& tensors, const ErrorModel& model, uint64_t seed,
                             const ParamSelector& selector) {
  const std::vector<InjectTask> tasks = inject_tasks(tensors, model, selector);
  if (!tensors.empty()) run_tasks("inject_bit_errors", tasks, tensors.front().clean, seed, /*count=*/false);
}

}  // namespace bitrobust::bits
