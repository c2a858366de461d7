#include "bitrobust/common/cpu_description.h"

#include <ATen/Version.h>
#include <dlfcn.h>
#include <strings.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <initializer_list>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define BITROBUST_X86 1
#endif

namespace bitrobust {
namespace {

// OpenBLAS's own entry points, looked up at run time: the BLAS LibTorch links may be another one.
using CoreNameFn = char* (*)();
using InitFn = void (*)();

template <typename Fn>
Fn openblas_function(const char* name) {
  return reinterpret_cast<Fn>(::dlsym(RTLD_DEFAULT, name));
}

std::string text_of(const char* text) { return text == nullptr ? std::string() : std::string(text); }

/// Who chose OpenBLAS's kernels, as this_cpu() says it (written only by choose_openblas_core, which
/// runs before this_cpu(): NOTE [OpenBLAS core]).
std::string& blas_chosen_by() {
  static std::string who = "OpenBLAS";
  return who;
}
std::atomic<bool> described{false};  // this_cpu() has run: choosing now would leave it stale

/// Printable ASCII as it is, anything else as '?': the text goes into JSON, which takes UTF-8 only.
std::string printable_ascii(const std::string& text) {
  std::string out = text;
  for (char& ch : out) {
    if (ch < 0x20 || ch > 0x7e) ch = '?';
  }
  return out;
}

#ifdef BITROBUST_X86
std::string registers_text(std::initializer_list<unsigned> words) {
  std::string text;
  for (unsigned w : words) text.append(reinterpret_cast<const char*>(&w), 4);
  return text;
}
#endif

std::string aten_kernels() {
  const std::string config = at::show_config();
  const std::string key = "CPU capability usage: ";  // (DEFAULT, AVX2, AVX512; VSX, ZVECTOR... elsewhere)
  const size_t where = config.find(key);
  if (where == std::string::npos) return "";
  const size_t begin = where + key.size();
  return printable_ascii(config.substr(begin, config.find_first_of("\r\n", begin) - begin));
}

std::string openblas_text() {
  const auto config = openblas_function<CoreNameFn>("openblas_get_config");
  const auto core = openblas_function<CoreNameFn>("openblas_get_corename");
  if (config == nullptr || core == nullptr) return "";
  std::istringstream words(text_of(config()));  // "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH ... Prescott MAX_THREADS=64"
  std::string library, version;
  words >> library >> version;
  return printable_ascii("OpenBLAS " + version + ", " + text_of(core()) + " kernels");
}

CpuDescription read_this_cpu() {
  CpuDescription cpu;
#ifdef BITROBUST_X86
  unsigned a = 0, b = 0, c = 0, d = 0;
  // (what a hypervisor puts there may be any bytes)
  if (__get_cpuid(0, &a, &b, &c, &d)) cpu.vendor = printable_ascii(registers_text({b, d, c}).c_str());
  if (__get_cpuid(1, &a, &b, &c, &d)) {
    const int base_family = static_cast<int>((a >> 8) & 0xf), base_model = static_cast<int>((a >> 4) & 0xf);
    cpu.family = base_family == 0xf ? base_family + static_cast<int>((a >> 20) & 0xff) : base_family;
    // (as Linux's /proc/cpuinfo: the extended model counts from family 6 on)
    cpu.model = base_family >= 0x6 ? base_model + (static_cast<int>((a >> 16) & 0xf) << 4) : base_model;
    cpu.stepping = static_cast<int>(a & 0xf);
  }
  if (__get_cpuid(0x80000000, &a, &b, &c, &d) && a >= 0x80000004) {
    std::string brand;
    for (unsigned leaf = 0x80000002; leaf <= 0x80000004; ++leaf) {
      __get_cpuid(leaf, &a, &b, &c, &d);
      brand += registers_text({a, b, c, d});
    }
    brand = printable_ascii(brand.c_str());  // up to its NUL
    const size_t first = brand.find_first_not_of(' '), last = brand.find_last_not_of(' ');
    cpu.name = first == std::string::npos ? "" : brand.substr(first, last - first + 1);
  }
#endif
  cpu.aten_kernels = aten_kernels();
  cpu.blas = openblas_text();
  if (!cpu.blas.empty()) {
    cpu.blas_chosen_by = std::getenv("OPENBLAS_CORETYPE") != nullptr ? "OPENBLAS_CORETYPE" : blas_chosen_by();
  }
  for (const char* name : {"ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
                           "ONEDNN_DEFAULT_FPMATH_MODE", "DNNL_DEFAULT_FPMATH_MODE", "OPENBLAS_CORETYPE",
                           "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS"}) {
    if (const char* value = std::getenv(name)) cpu.kernel_settings.emplace_back(name, printable_ascii(value));
  }
  std::sort(cpu.kernel_settings.begin(), cpu.kernel_settings.end());  // by name, as JSON objects keep them
  return cpu;
}

}  // namespace

CpuFeatures this_cpu_features() {
  CpuFeatures features;
#ifdef BITROBUST_X86
  __builtin_cpu_init();
  // (__builtin_cpu_supports also checks that the OS saves the AVX and AVX-512 registers)
  features.intel = __builtin_cpu_is("intel") != 0;
  features.avx2_and_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  features.avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                    __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#endif
  return features;
}

bool openblas_core_has_avx2_kernels(const std::string& core) {
  for (const char* known : {"Haswell", "SkylakeX", "Cooperlake", "SapphireRapids", "Zen"}) {
    if (strcasecmp(core.c_str(), known) == 0) return true;
  }
  return false;
}

std::vector<std::string> openblas_cores_to_try(const CpuFeatures& cpu, const std::string& current,
                                               bool coretype_set) {
  if (coretype_set || !cpu.intel || !cpu.avx2_and_fma || openblas_core_has_avx2_kernels(current)) return {};
  if (cpu.avx512) return {"SkylakeX", "Haswell"};
  return {"Haswell"};
}

void choose_openblas_core() {
  static std::once_flag once;
  std::call_once(once, [] {
    const auto core_name = openblas_function<CoreNameFn>("openblas_get_corename");
    const auto quit = openblas_function<InitFn>("gotoblas_dynamic_quit");
    const auto init = openblas_function<InitFn>("gotoblas_dynamic_init");
    if (described || core_name == nullptr || quit == nullptr || init == nullptr) return;
    const std::string own = text_of(core_name());
    const std::vector<std::string> cores =
        openblas_cores_to_try(this_cpu_features(), own, std::getenv("OPENBLAS_CORETYPE") != nullptr);
    for (const std::string& core : cores) {
      // (the variable is taken away again, so that the description can tell who chose)
      ::setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
      quit();
      init();
      ::unsetenv("OPENBLAS_CORETYPE");
      if (openblas_core_has_avx2_kernels(text_of(core_name()))) {
        blas_chosen_by() = "bitrobust, where OpenBLAS took this CPU for a " + own;
        return;
      }
    }
    if (!cores.empty()) {  // none took: OpenBLAS's own choice again, which the description reports
      quit();
      init();
    }
  });
}

const CpuDescription& this_cpu() {
  described = true;
  static const CpuDescription cpu = read_this_cpu();
  return cpu;
}

nlohmann::json to_json(const CpuDescription& cpu) {
  nlohmann::json j = nlohmann::json::object();
  const auto text = [&j](const char* key, const std::string& value) {
    if (!value.empty()) j[key] = value;
  };
  const auto number = [&j](const char* key, int value) {
    if (value >= 0) j[key] = value;
  };
  text("name", cpu.name);
  text("vendor", cpu.vendor);
  number("family", cpu.family);
  number("model", cpu.model);
  number("stepping", cpu.stepping);
  text("aten_kernels", cpu.aten_kernels);
  text("blas", cpu.blas);
  text("blas_chosen_by", cpu.blas_chosen_by);
  if (!cpu.kernel_settings.empty()) {
    nlohmann::json settings = nlohmann::json::object();
    for (const auto& [name, value] : cpu.kernel_settings) settings[name] = value;
    j["kernel_settings"] = settings;
  }
  return j;
}

CpuDescription cpu_from_json(const nlohmann::json& j) {
  CpuDescription cpu;
  if (!j.is_object()) return cpu;
  const auto text = [&j](const char* key) {
    const auto it = j.find(key);
    return it != j.end() && it->is_string() ? printable_ascii(it->get<std::string>()) : std::string();
  };
  const auto number = [&j](const char* key) {
    const auto it = j.find(key);
    return it != j.end() && it->is_number_integer() && it->get<int64_t>() >= 0 && it->get<int64_t>() < (1 << 20)
               ? static_cast<int>(it->get<int64_t>())
               : -1;
  };
  cpu.name = text("name");
  cpu.vendor = text("vendor");
  cpu.family = number("family");
  cpu.model = number("model");
  cpu.stepping = number("stepping");
  cpu.aten_kernels = text("aten_kernels");
  cpu.blas = text("blas");
  cpu.blas_chosen_by = text("blas_chosen_by");
  const auto settings = j.find("kernel_settings");
  if (settings != j.end() && settings->is_object()) {
    for (const auto& item : settings->items()) {
      if (item.value().is_string()) {
        cpu.kernel_settings.emplace_back(printable_ascii(item.key()), printable_ascii(item.value().get<std::string>()));
      }
    }
  }
  return cpu;
}

bool same_cpu_and_kernels(const CpuDescription& a, const CpuDescription& b) {
  const auto settings = [](const CpuDescription& cpu) {
    std::vector<std::pair<std::string, std::string>> kept;
    for (const auto& setting : cpu.kernel_settings) {
      if (setting.first != "OPENBLAS_CORETYPE") kept.push_back(setting);
    }
    std::sort(kept.begin(), kept.end());
    return kept;
  };
  return a.name == b.name && a.vendor == b.vendor && a.family == b.family && a.model == b.model &&
         a.stepping == b.stepping && a.aten_kernels == b.aten_kernels && a.blas == b.blas &&
         settings(a) == settings(b);
}

std::string describe(const CpuDescription& cpu) {
  std::ostringstream out;
  out << (cpu.name.empty() ? "unknown CPU" : cpu.name);
  if (cpu.family >= 0) {
    out << " (" << cpu.vendor << " family " << cpu.family << " model " << cpu.model << " stepping " << cpu.stepping
        << ")";
  }
  if (!cpu.aten_kernels.empty()) out << "; ATen " << cpu.aten_kernels << " kernels";
  if (!cpu.blas.empty()) out << "; " << cpu.blas << " (chosen by " << cpu.blas_chosen_by << ")";
  for (const auto& [name, value] : cpu.kernel_settings) out << "; " << name << "=" << value;
  return out.str();
}

}  // namespace bitrobust
