// The CPU description every result records, and the OpenBLAS kernels chosen at start
// (bitrobust/common/cpu_description.h; test_main calls choose_openblas_core, as the program does).
#include "bitrobust/common/cpu_description.h"

#include <ATen/Version.h>
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "test_util.h"
#include <vector>

namespace bitrobust {
namespace {

/// The first processor's "key : value" lines of /proc/cpuinfo (empty where there is none).
std::map<std::string, std::string> proc_cpuinfo() {
  std::map<std::string, std::string> fields;
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line) && !line.empty()) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const auto trim = [](std::string s) {
      const size_t first = s.find_first_not_of(" \t"), last = s.find_last_not_of(" \t");
      return first == std::string::npos ? std::string() : s.substr(first, last - first + 1);
    };
    fields[trim(line.substr(0, colon))] = trim(line.substr(colon + 1));
  }
  return fields;
}

TEST(CpuDescription, IdentityIsWhatProcCpuinfoShows) {
  const CpuDescription& cpu = this_cpu();
  const auto fields = proc_cpuinfo();
  if (!fields.count("vendor_id") || !fields.count("cpu family")) GTEST_SKIP() << "no x86 /proc/cpuinfo here";
  EXPECT_EQ(cpu.vendor, fields.at("vendor_id"));
  EXPECT_EQ(std::to_string(cpu.family), fields.at("cpu family"));
  EXPECT_EQ(std::to_string(cpu.model), fields.at("model"));
  if (fields.count("stepping")) EXPECT_EQ(std::to_string(cpu.stepping), fields.at("stepping"));
  // (without the brand leaves, which some hypervisors leave out, Linux prints a name of its own)
  if (fields.count("model name") && !cpu.name.empty()) EXPECT_EQ(cpu.name, fields.at("model name"));
  // What choose_openblas_core decides by agrees with the kernel's flags (which also require the OS to
  // save the registers).
  const std::string flags = " " + (fields.count("flags") ? fields.at("flags") : std::string()) + " ";
  const auto has = [&flags](const char* flag) { return flags.find(std::string(" ") + flag + " ") != std::string::npos; };
  const CpuFeatures features = this_cpu_features();
  EXPECT_EQ(features.intel, cpu.vendor == "GenuineIntel");
  EXPECT_EQ(features.avx2_and_fma, has("avx2") && has("fma"));
  EXPECT_EQ(features.avx512, has("avx512f") && has("avx512bw") && has("avx512dq") && has("avx512vl"));
}

// NOTE [OpenBLAS core]: only an Intel CPU with AVX2 and FMA whose OpenBLAS runs kernels without AVX2
// gets other ones, and never against the user's OPENBLAS_CORETYPE; names 0.3.21 finds, best first.
TEST(CpuDescription, OpenBlasIsAskedForOtherKernelsOnlyWhereItsOwnLackAvx2) {
  using Cores = std::vector<std::string>;
  CpuFeatures avx512, avx2, amd, sse;
  avx512.intel = avx2.intel = sse.intel = true;
  avx512.avx2_and_fma = avx2.avx2_and_fma = amd.avx2_and_fma = true;
  avx512.avx512 = amd.avx512 = true;
  EXPECT_EQ(openblas_cores_to_try(avx512, "Prescott", false), (Cores{"SkylakeX", "Haswell"}));
  EXPECT_EQ(openblas_cores_to_try(avx512, "Sandybridge", false), (Cores{"SkylakeX", "Haswell"}));
  EXPECT_EQ(openblas_cores_to_try(avx2, "Prescott", false), (Cores{"Haswell"}));
  for (const char* own : {"Haswell", "SkylakeX", "Cooperlake", "SAPPHIRERAPIDS", "Zen"}) {
    EXPECT_TRUE(openblas_cores_to_try(avx512, own, false).empty()) << own;
    EXPECT_TRUE(openblas_core_has_avx2_kernels(own)) << own;
  }
  EXPECT_FALSE(openblas_core_has_avx2_kernels("Prescott"));
  EXPECT_TRUE(openblas_cores_to_try(avx512, "Prescott", true).empty());  // OPENBLAS_CORETYPE set
  EXPECT_TRUE(openblas_cores_to_try(amd, "Prescott", false).empty());
  EXPECT_TRUE(openblas_cores_to_try(sse, "Prescott", false).empty());
}

TEST(CpuDescription, AtenKernelsAreThoseShowConfigReports) {
  const std::string kernels = this_cpu().aten_kernels;
  ASSERT_FALSE(kernels.empty());
  EXPECT_NE(at::show_config().find("CPU capability usage: " + kernels + "\n"), std::string::npos) << kernels;
}

// NOTE [OpenBLAS core]: on an Intel CPU with AVX2 and FMA OpenBLAS runs kernels that use them, what
// its own table says (SkylakeX, ...) or, where the table does not know the CPU, what bitrobust chose.
TEST(CpuDescription, OpenBlasRunsKernelsThisCpuSupports) {
  const auto core_name = reinterpret_cast<char* (*)()>(::dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  const CpuDescription& cpu = this_cpu();
  if (core_name == nullptr) {
    EXPECT_EQ(cpu.blas, "");
    GTEST_SKIP() << "the BLAS here is not OpenBLAS";
  }
  const std::string core = core_name();
  EXPECT_EQ(cpu.blas.rfind("OpenBLAS 0.", 0), 0u) << cpu.blas;
  const std::string ending = ", " + core + " kernels";
  ASSERT_GT(cpu.blas.size(), ending.size());
  EXPECT_EQ(cpu.blas.substr(cpu.blas.size() - ending.size()), ending) << cpu.blas;
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) {
    EXPECT_EQ(cpu.blas_chosen_by, "OPENBLAS_CORETYPE");
    return;
  }
  // bitrobust says it chose exactly where the core changed from the one OpenBLAS took at load.
  const std::string at_load = test_util::openblas_core_at_load;
  if (core == at_load) {
    EXPECT_EQ(cpu.blas_chosen_by, "OpenBLAS");
  } else {
    EXPECT_EQ(cpu.blas_chosen_by, "bitrobust, where OpenBLAS took this CPU for a " + at_load);
    EXPECT_FALSE(openblas_cores_to_try(this_cpu_features(), at_load, false).empty()) << at_load;
  }
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_is("intel") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    EXPECT_TRUE(core == "Haswell" || core == "SkylakeX" || core == "Cooperlake" || core == "SapphireRapids") << core;
  }
#endif
  choose_openblas_core();  // a second call changes nothing
  EXPECT_EQ(std::string(core_name()), core);
}

TEST(CpuDescription, JsonLeavesOutWhatIsUnknownAndReadsBack) {
  EXPECT_EQ(to_json(CpuDescription{}), nlohmann::json::object());
  const nlohmann::json j = to_json(this_cpu());
  const CpuDescription back = cpu_from_json(j);
  EXPECT_TRUE(same_cpu_and_kernels(back, this_cpu()));
  EXPECT_EQ(describe(back), describe(this_cpu()));
  EXPECT_EQ(to_json(back), j);

  CpuDescription cpu;
  cpu.name = "Test CPU";
  cpu.vendor = "GenuineIntel";
  cpu.family = 6;
  cpu.model = 207;
  cpu.stepping = 2;
  cpu.aten_kernels = "AVX2";
  cpu.blas = "OpenBLAS 0.3.21, Cooperlake kernels";
  cpu.blas_chosen_by = "OpenBLAS";
  cpu.kernel_settings = {{"ONEDNN_MAX_CPU_ISA", "AVX2"}};
  EXPECT_EQ(to_json(cpu), nlohmann::json::parse(R"({"name": "Test CPU", "vendor": "GenuineIntel", "family": 6,
      "model": 207, "stepping": 2, "aten_kernels": "AVX2", "blas": "OpenBLAS 0.3.21, Cooperlake kernels",
      "blas_chosen_by": "OpenBLAS", "kernel_settings": {"ONEDNN_MAX_CPU_ISA": "AVX2"}})"));
  EXPECT_EQ(describe(cpu),
            "Test CPU (GenuineIntel family 6 model 207 stepping 2); ATen AVX2 kernels; OpenBLAS 0.3.21, Cooperlake "
            "kernels (chosen by OpenBLAS); ONEDNN_MAX_CPU_ISA=AVX2");
}

// Files are users' input: what a hand-edited or older file records is read as far as it makes sense,
// never an error, and only printable text comes out of it.
TEST(CpuDescription, WhatAFileRecordsIsReadLeniently) {
  for (const char* text : {"null", "[]", "7", "\"cpu\"", "{}"}) {
    const CpuDescription cpu = cpu_from_json(nlohmann::json::parse(text));
    EXPECT_EQ(to_json(cpu), nlohmann::json::object()) << text;
    EXPECT_EQ(describe(cpu), "unknown CPU") << text;
  }
  const CpuDescription cpu = cpu_from_json(nlohmann::json::parse(
      R"({"name": "a\u00e9b\nc", "family": "6", "model": -3, "stepping": 1e9, "blas": 4,
          "kernel_settings": {"X": "1", "Y": 2}})"));
  EXPECT_EQ(cpu.name, "a??b?c");  // (é is two bytes in UTF-8)
  EXPECT_EQ(cpu.family, -1);
  EXPECT_EQ(cpu.model, -1);
  EXPECT_EQ(cpu.stepping, -1);
  EXPECT_EQ(cpu.blas, "");
  ASSERT_EQ(cpu.kernel_settings.size(), 1u);
  EXPECT_EQ(cpu.kernel_settings[0], std::make_pair(std::string("X"), std::string("1")));
}

TEST(CpuDescription, SameKernelsWhoeverChoseOpenBlasCore) {
  CpuDescription a = this_cpu();
  CpuDescription b = a;
  b.blas_chosen_by = "OPENBLAS_CORETYPE";
  b.kernel_settings.emplace_back("OPENBLAS_CORETYPE", "whatever");
  EXPECT_TRUE(same_cpu_and_kernels(a, b));
  b = a;
  b.model += 1;
  EXPECT_FALSE(same_cpu_and_kernels(a, b));
  b = a;
  b.blas = a.blas + ", other kernels";
  EXPECT_FALSE(same_cpu_and_kernels(a, b));
  b = a;
  b.kernel_settings.emplace_back("ONEDNN_MAX_CPU_ISA", "AVX2");
  EXPECT_FALSE(same_cpu_and_kernels(a, b));
  b = a;
  b.aten_kernels = "DEFAULT";
  EXPECT_EQ(same_cpu_and_kernels(a, b), a.aten_kernels == "DEFAULT");
}

}  // namespace
}  // namespace bitrobust
