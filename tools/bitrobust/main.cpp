// bitrobust: measure and improve the bit error robustness of quantized neural networks.
#include "command_line.h"

int main(int argc, char** argv) {
  bitrobust::cli::CommandLine command_line;
  if (const std::optional<int> status = command_line.parse(argc, argv)) return *status;
  return command_line.run();
}
