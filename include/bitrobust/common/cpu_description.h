#pragma once
// The CPU a result was computed on, and the kernels the math libraries chose for it.
//
// oneDNN, OpenBLAS and ATen pick their kernels by the CPU's instruction set, and kernels of another
// vector width sum in another order: the same training command gives other weights on another kind
// of CPU, as it does with another thread count (measured: LeNet, 40 steps, the same binary and
// machine, oneDNN capped at AVX2 or OpenBLAS given Haswell kernels each moved the final loss in the
// 4th-5th decimal, from 1.01766 to 1.01761 and 1.01739). So every result records this description
// next to its versions (io::version_info).
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace bitrobust {

struct CpuDescription {
  std::string name;            ///< the processor's brand string (cpuid), trimmed
  std::string vendor;          ///< "GenuineIntel", "AuthenticAMD", ...; empty off x86
  int family = -1;             ///< x86 family, model and stepping as /proc/cpuinfo shows them; -1 off x86
  int model = -1;
  int stepping = -1;
  std::string aten_kernels;    ///< ATen's vectorized kernels: "DEFAULT", "AVX2", "AVX512" (at::show_config)
  std::string blas;            ///< "OpenBLAS <version>, <core> kernels"; empty where the BLAS is not OpenBLAS
  std::string blas_chosen_by;  ///< who chose OpenBLAS's kernels: "OpenBLAS", "OPENBLAS_CORETYPE" or
                               ///< "bitrobust, where OpenBLAS took this CPU for a <core>" (NOTE [OpenBLAS core])
  /// Environment variables set in this process that change which kernels the libraries use.
  std::vector<std::pair<std::string, std::string>> kernel_settings;
};

/// This process's CPU and kernels (read once; choose_openblas_core before the first call).
const CpuDescription& this_cpu();

/// {"name", "vendor", "family", "model", "stepping", "aten_kernels", "blas", "blas_chosen_by",
/// "kernel_settings": {NAME: value}}; absent fields (empty, -1, no settings) are left out.
nlohmann::json to_json(const CpuDescription& cpu);

/// to_json's inverse for what a file recorded: fields missing or of another type stay empty (-1),
/// never an error (model files and checkpoints of older versions record none).
CpuDescription cpu_from_json(const nlohmann::json& j);

/// One line: "NAME (VENDOR family F model M stepping S); ATen AVX2 kernels; OpenBLAS 0.3.21, ...".
std::string describe(const CpuDescription& cpu);

/// Whether float work can be expected to round alike on both: the same CPU and the same kernels.
/// Who chose OpenBLAS's kernels does not matter, only which (so OPENBLAS_CORETYPE is left out).
bool same_cpu_and_kernels(const CpuDescription& a, const CpuDescription& b);

/// NOTE [OpenBLAS core]
/// OpenBLAS (built with DYNAMIC_ARCH, as Debian's is) picks its kernels from a table of CPU models
/// when it is loaded. Debian 12's 0.3.21 does not know newer Intel server CPUs (family 6 model 207,
/// say) and falls back to its Prescott kernels (SSE3): on such a machine the MLP trained at 0.37-0.53x
/// the speed it trains at with the Cooperlake kernels (scripts/bench_openblas_core.sh,
/// docs/measurements.md). Where OpenBLAS is the BLAS, chose kernels without AVX2 on an Intel CPU that has AVX2
/// and FMA, and OPENBLAS_CORETYPE is not set, this re-runs OpenBLAS's core selection with the kernels
/// the CPU supports: Cooperlake (AVX-512 with BF16), SkylakeX (AVX-512) or Haswell (AVX2), those
/// OpenBLAS itself picks for the CPUs it knows of these kinds. GEMM results then equal those of the
/// same process started with OPENBLAS_CORETYPE set to that core. Call it before the first BLAS call
/// and before other threads run (configure_cpu_runtime does); later calls do nothing.
void choose_openblas_core();

}  // namespace bitrobust
