// bitrobust: measure and improve the bit error robustness of quantized neural networks.
#include "bitrobust/common/cpu_description.h"
#include "command_line.h"

int main(int argc, char** argv) {
  bitrobust::choose_openblas_core();  // first, before any BLAS call or thread (NOTE [OpenBLAS core])
  bitrobust::cli::CommandLine command_line;
  if (const std::optional<int> status = command_line.parse(argc, argv)) return *status;
  return command_line.run();
}
