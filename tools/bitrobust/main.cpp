// bitrobust: measure and improve the bit error robustness of quantized neural networks.
#include <c10/util/Exception.h>

#include <cstdio>
#include <map>

#include "bitrobust/common/error.h"
#include "bitrobust/config.h"
#include "commands.h"

int main(int argc, char** argv) {
  CLI::App app{"bitrobust " BITROBUST_VERSION
               ": how well do quantized neural networks survive bit errors in their weights?"};
  app.require_subcommand(1);
  app.set_version_flag("--version", BITROBUST_VERSION);
  std::map<CLI::App*, bitrobust::cli::Runner> runners;
  auto add = [&](bitrobust::cli::Runner (*reg)(CLI::App&)) {
    const size_t before = app.get_subcommands({}).size();
    bitrobust::cli::Runner runner = reg(app);
    runners[app.get_subcommands({})[before]] = std::move(runner);
  };
  add(bitrobust::cli::register_train);
  add(bitrobust::cli::register_test);
  add(bitrobust::cli::register_quantize);
  add(bitrobust::cli::register_export);
  add(bitrobust::cli::register_eval);
  add(bitrobust::cli::register_compare);
  add(bitrobust::cli::register_pattern);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [cmd, run] : runners) {
      if (cmd->parsed()) return run();
    }
  } catch (const bitrobust::Error& e) {
    std::fprintf(stderr, "bitrobust: error: %s\n", e.what());
    return 1;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "bitrobust: error: %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bitrobust: error: %s\n", e.what());
    return 1;
  }
  return 1;
}
