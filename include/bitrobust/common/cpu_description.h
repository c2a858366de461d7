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
  /// Environment variables set in this process that change which kernels the libraries use, by name.
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
/// OpenBLAS (built with DYNAMIC_ARCH, as Debian's is) picks its kernels by the CPU's model number when
/// it is loaded. Debian 12's 0.3.21 takes every Intel family 6 CPU of model 0xB0 and above (this
/// project's machine: 207, 0xCF; Raptor Lake desktops too) for a Prescott and runs its SSE3 kernels:
/// a missing `break` in its detection (OpenBLAS issue #4267, fixed by PR #4268 in 2023). There the
/// MLP trained at 0.40-0.45x the speed it trains at with AVX-512 kernels (scripts/bench_openblas_core.sh,
/// docs/measurements.md). So where OpenBLAS is the BLAS and runs kernels without AVX2 on an Intel CPU
/// that has AVX2 and FMA, and OPENBLAS_CORETYPE is not set, choose_openblas_core sets that variable
/// and has OpenBLAS choose again (gotoblas_dynamic_quit, gotoblas_dynamic_init: the selection OpenBLAS
/// runs at load, which reads the variable; each core's block sizes are computed by its table's init
/// and every buffer has the build's fixed size, so nothing sized for the first core is left behind).
/// It asks for SkylakeX where the CPU has AVX-512 F, BW, DQ and VL, else for Haswell: names 0.3.21
/// finds (its OPENBLAS_CORETYPE lookup misses Cooperlake, OpenBLAS PR #3806). It keeps a core only if
/// OpenBLAS then runs AVX2 kernels, and says so in this_cpu().blas_chosen_by. GEMM results equal those
/// of a process started with the variable set to the same core. Call it first in main(), before any
/// BLAS call, any other thread, and this_cpu(): between the two calls OpenBLAS has no kernels at all.
/// Later calls, and a first call after this_cpu(), do nothing.
void choose_openblas_core();

/// What choose_openblas_core decides by.
struct CpuFeatures {
  bool intel = false;
  bool avx2_and_fma = false;
  bool avx512 = false;  ///< F, BW, DQ and VL, with the OS saving their registers
};
CpuFeatures this_cpu_features();

/// The OpenBLAS cores choose_openblas_core asks for, in turn, while OpenBLAS runs `current`: none
/// where `current` has AVX2 kernels, the user set OPENBLAS_CORETYPE, or the CPU is not an Intel
/// one with AVX2 and FMA (for other vendors OpenBLAS's own choice is the better one).
std::vector<std::string> openblas_cores_to_try(const CpuFeatures& cpu, const std::string& current,
                                               bool coretype_set);

/// Whether an OpenBLAS core's kernels use AVX2 (Haswell, SkylakeX, Cooperlake, SapphireRapids, Zen).
bool openblas_core_has_avx2_kernels(const std::string& core);

}  // namespace bitrobust
