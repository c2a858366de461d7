#pragma once
// The bitrobust command line: every subcommand registered on one CLI11 app, parsed in one step and
// run in another, so that a fuzzer can parse without running (fuzz/fuzz_command_line.cpp).
#include <CLI/CLI.hpp>

#include <cstddef>
#include <map>
#include <optional>

#include "commands.h"

namespace bitrobust::cli {

class CommandLine {
 public:
  CommandLine();
  CommandLine(const CommandLine&) = delete;
  CommandLine& operator=(const CommandLine&) = delete;

  /// Parses argv. Returns the exit status where the command line itself ends the run (--help and
  /// --version: 0, what they print written; a syntax error: 2, its one-line message on stderr), and
  /// nothing where run() follows.
  std::optional<int> parse(int argc, const char* const* argv);
  /// Runs the parsed command: its status, or 1 with one message on stderr for whatever it threw.
  int run();
  /// How many commands the last parse selected (1 when run() follows).
  size_t parsed_commands() const;

 private:
  CLI::App app_;
  std::map<CLI::App*, Runner> runners_;
};

}  // namespace bitrobust::cli
