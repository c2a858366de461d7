// libFuzzer harness: the command line itself, parsed as `bitrobust` parses it (CLI11, the options'
// validators, the project's rewording of CLI11's messages, the empty-value check), without running
// the command. The input is the arguments, one per line.
// Properties: parsing throws nothing; a command line that ends the run is --help or --version
// (status 0, text on standard output, nothing on standard error) or a syntax error (status 2, one
// line on standard error: "bitrobust: error: ... (see --help)", valid UTF-8 with no control
// characters); a command line that is accepted names exactly one command and prints nothing.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bitrobust/report/printable.h"
#include "command_line.h"
#include "fuzz_util.h"

using namespace bitrobust;

namespace {

std::vector<std::string> split_lines(const uint8_t* data, size_t size) {
  std::vector<std::string> args;
  std::string current;
  for (size_t i = 0; i < size && args.size() < 64; ++i) {
    if (data[i] == '\n') {
      args.push_back(current);
      current.clear();
    } else {
      current += static_cast<char>(data[i]);
    }
  }
  if (!current.empty() && args.size() < 64) args.push_back(current);
  return args;
}

// Standard error and std::cout (where CLI11 prints --help) captured for one parse. stdout itself
// is not captured: nothing is printed through it before a command runs.
struct Captured {
  std::string out, err;
};

template <typename F>
Captured capture(F&& f) {
  std::ostringstream out;
  std::streambuf* const saved_out = std::cout.rdbuf(out.rdbuf());
  char* err_text = nullptr;
  size_t err_size = 0;
  std::FILE* const err = open_memstream(&err_text, &err_size);
  if (err == nullptr) std::abort();
  std::FILE* const saved_err = stderr;
  stderr = err;  // (glibc's stderr is a variable: what the code prints with fprintf(stderr) lands here)
  f();
  stderr = saved_err;
  std::fclose(err);
  std::cout.rdbuf(saved_out);
  Captured c{out.str(), std::string(err_text, err_size)};
  std::free(err_text);
  return c;
}

std::string shown(const std::vector<std::string>& args) {
  std::string s;
  for (const std::string& a : args) s += " [" + report::printable(a) + "]";
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<std::string> args = split_lines(data, size);
  std::vector<const char*> argv{"bitrobust"};
  for (const std::string& a : args) argv.push_back(a.c_str());

  cli::CommandLine command_line;
  std::optional<int> status;
  const Captured printed = capture([&] {
    try {
      status = command_line.parse(static_cast<int>(argv.size()), argv.data());
    } catch (const std::exception& e) {
      fuzz::property_failed("parse threw " + std::string(e.what()) + " for" + shown(args));
    } catch (...) {
      fuzz::property_failed("parse threw a non-standard exception for" + shown(args));
    }
  });

  if (!status) {
    if (!printed.err.empty() || !printed.out.empty())
      fuzz::property_failed("an accepted command line printed '" + printed.err + printed.out + "' for" + shown(args));
    if (command_line.parsed_commands() != 1)
      fuzz::property_failed(std::to_string(command_line.parsed_commands()) + " commands accepted in" + shown(args));
    return 0;
  }
  if (*status == 0) {
    if (printed.out.empty() || !printed.err.empty())
      fuzz::property_failed("status 0 without help or version text (stderr '" + printed.err + "') for" + shown(args));
    return 0;
  }
  if (*status != 2) fuzz::property_failed("status " + std::to_string(*status) + " from parsing" + shown(args));
  const std::string& e = printed.err;
  const std::string prefix = "bitrobust: error: ", suffix = " (see --help)\n";
  if (e.size() < prefix.size() + suffix.size() || e.compare(0, prefix.size(), prefix) != 0 ||
      e.compare(e.size() - suffix.size(), suffix.size(), suffix) != 0)
    fuzz::property_failed("a syntax error not in the project's format: '" + e + "' for" + shown(args));
  const std::string line = e.substr(0, e.size() - 1);
  if (report::printable(line) != line)
    fuzz::property_failed("a syntax error with control characters or invalid UTF-8 for" + shown(args));
  if (!printed.out.empty()) fuzz::property_failed("a syntax error also printed '" + printed.out + "' for" + shown(args));
  return 0;
}
