#include "command_line.h"

#include <c10/util/Exception.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include <torch/version.h>

#include "bitrobust/common/cpu_description.h"
#include "bitrobust/common/error.h"
#include "bitrobust/config.h"
#include "bitrobust/report/printable.h"

namespace bitrobust::cli {

namespace {
// Every message goes through printable(): it may quote a file's field, a parameter name or an
// argument, and a newline or terminal escape in one must not forge lines or change the terminal.
int syntax_error(const std::string& message) {
  std::fprintf(stderr, "bitrobust: error: %s (see --help)\n", report::printable_message(message).c_str());
  return 2;
}
int error(const std::string& message) {
  std::fprintf(stderr, "bitrobust: error: %s\n", report::printable_message(message).c_str());
  return 1;
}
/// --version: the program's version, then what its floats depend on (for bug reports).
std::string version_text() {
#ifdef BITROBUST_WITH_CUDA
  const char* cuda = "with CUDA kernels";
#else
  const char* cuda = "without CUDA kernels";
#endif
  return std::string("bitrobust ") + BITROBUST_VERSION + "\nLibTorch " + TORCH_VERSION + ", " + cuda +
         "\nCPU: " + describe(this_cpu());
}

// What was printed goes through stdio's buffer: a full disk or a closed descriptor shows only when
// it is flushed, and would otherwise end the run with `status` and nothing written
// (`bitrobust test ... > /dev/full`).
int flushed(int status) {
  if (std::fflush(stdout) == 0 && !std::ferror(stdout)) return status;
  std::fprintf(stderr, "bitrobust: error: cannot write standard output: %s\n", std::strerror(errno));
  return 1;
}
// --help with each default at the end of its option's description ("training epochs (default 3)"),
// where CLI11 glues it to the type and range ("INT:an integer >= 1=3").
class HelpFormatter : public CLI::Formatter {
 public:
  std::string make_option_opts(const CLI::Option* opt) const override {
    std::string text = CLI::Formatter::make_option_opts(opt);
    if (!moved(opt)) return text;
    const std::string& value = opt->get_default_str();
    const size_t at = opt->get_type_name().empty() ? 0 : 1 + get_label(opt->get_type_name()).size();
    if (text.compare(at, value.size() + 1, "=" + value) == 0) text.erase(at, value.size() + 1);
    return text;
  }
  std::string make_option_desc(const CLI::Option* opt) const override {
    const std::string text = CLI::Formatter::make_option_desc(opt);
    return moved(opt) ? text + " (default " + opt->get_default_str() + ")" : text;
  }

 private:
  // Options whose default CLI11 would show (not flags, not options with their own option text).
  static bool moved(const CLI::Option* opt) {
    return !opt->get_default_str().empty() && opt->get_option_text().empty() && opt->get_type_size() != 0;
  }
};
}  // namespace

CommandLine::CommandLine()
    // (Named, so that usage lines say "bitrobust", not the path the program was started by.)
    : app_{"bitrobust " BITROBUST_VERSION ": how well do quantized neural networks survive bit errors in their weights?",
           "bitrobust"} {
  app_.formatter(std::make_shared<HelpFormatter>());  // (before the subcommands, which copy it)
  app_.require_subcommand(1);
  const std::string environment =
      "Environment: BITROBUST_DATA (a folder of one folder per data set), BITROBUST_TRUST_ARCHIVES=1,\n"
      "BITROBUST_INJECTION=dense, BITROBUST_CHANNELS_LAST=0 (README).";
  app_.footer(
      "Example (Fashion-MNIST, LeNet, 8-bit, weight clipping, then the bit error benchmark):\n"
      "  bitrobust train --dataset fashion-mnist --norm regn --scheme rquant --bits 8 --clip 0.1 --out m.pt\n"
      "  bitrobust eval --model m.pt --rates 0.01%,0.1%,1% --json m.eval.json\n" +
      environment + " Each command's options: bitrobust COMMAND --help.");
  app_.set_version_flag("--version", [] { return version_text(); });
  for (Runner (*reg)(CLI::App&) : {register_train, register_test, register_quantize, register_export, register_eval,
                                   register_compare, register_pattern, register_info}) {
    const size_t before = app_.get_subcommands({}).size();
    Runner runner = reg(app_);
    CLI::App* command = app_.get_subcommands({})[before];
    // (A subcommand copies its parent's footer: the example of train and eval is the program's.)
    command->footer(environment);
    runners_[command] = std::move(runner);
  }
}

std::optional<int> CommandLine::parse(int argc, const char* const* argv) {
  try {
    app_.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version end parsing with "errors" of status 0; everything else is a syntax error
    // of the command line: one line in the project's format and status 2, whatever CLI11's code.
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {
      return flushed(app_.exit(e));
    }
    std::string message = e.what();
    std::string commands;
    bool known = false;
    for (const auto& [cmd, run] : runners_) {
      commands += (commands.empty() ? "" : ", ") + cmd->get_name();
      known = known || (argc >= 2 && cmd->get_name() == argv[1]);
    }
    if (argc < 2) {
      message = "no command given (commands: " + commands + ")";
    } else if (!known && argv[1][0] != '-') {
      message = "unknown command '" + std::string(argv[1]) + "' (commands: " + commands + ")";
    } else if (!known) {
      message = "unknown option '" + std::string(argv[1]) + "': a command comes first (commands: " + commands + ")";
    }
    // CLI11 (2.3) lists unexpected arguments in reverse ("not expected: bf16 --precision"): from the
    // parser's own list, in the order they were typed.
    // (compare's one positional argument, in CLI11's words "results is required")
    if (message == "results is required") message = "compare needs result files: the --json files of eval runs";
    // CLI11 checks required options before unexpected ones, so a mistyped required option read
    // "--model is required" (found by a review: `eval --modle m.pt`): the typo is named first.
    // (Not for a missing or unknown command, which CLI11 also reports as a RequiredError.)
    const bool required = known && dynamic_cast<const CLI::RequiredError*>(&e) != nullptr;
    if (dynamic_cast<const CLI::ExtrasError*>(&e) != nullptr || required) {
      const std::vector<std::string> rest = app_.remaining(/*recurse=*/true);
      std::string words;
      for (const std::string& word : rest) words += (words.empty() ? "" : " ") + word;
      if (!rest.empty()) {
        message = std::string(rest.size() > 1 ? "The following arguments were not expected: "
                                              : "The following argument was not expected: ") + words +
                  (required ? " (and " + message + ")" : "");
      }
    }
    // CLI11's words for an option given twice ("--batch: At Most 1 required but received 2").
    const std::string twice = ": At Most 1 required but received ";
    if (const size_t at = message.find(twice); at != std::string::npos) {
      message = message.substr(0, at) + " given more than once (" + message.substr(at + twice.size()) +
                " times); give it once";
    }
    // CLI11's words for an option without its value ("--rates=", or "--rates" last: "--rates: 1
    // required TEXT missing"), in the project's (found by a review).
    const std::string missing = " missing";
    const size_t at = message.find(": 1 required ");
    if (at != std::string::npos && message.size() > missing.size() &&
        message.compare(message.size() - missing.size(), missing.size(), missing) == 0) {
      message = message.substr(0, at) + ": no value given";
    }
    return syntax_error(message);
  }
  for (auto& [cmd, run] : runners_) {
    if (!cmd->parsed()) continue;
    // An option given an empty value ("--json ''", often an unset shell variable) would silently
    // mean "not given".
    for (const CLI::Option* option : cmd->get_options()) {
      if (option->count() == 0 || option->get_type_size() == 0) continue;  // not given, or a flag
      if (option->get_name() == "--title") continue;                       // an empty title is a choice
      for (const std::string& value : option->results()) {
        if (value.find_first_not_of(" \t") == std::string::npos) return syntax_error(option->get_name() + ": empty value");
      }
    }
  }
  return std::nullopt;
}

size_t CommandLine::parsed_commands() const {
  size_t n = 0;
  for (const auto& [cmd, run] : runners_) n += cmd->parsed() ? 1 : 0;
  return n;
}

int CommandLine::run() {
  try {
    for (auto& [cmd, run] : runners_) {
      if (!cmd->parsed()) continue;
      return flushed(run());
    }
  } catch (const bitrobust::Error& e) {
    return error(e.what());
  } catch (const c10::Error& e) {
    return error(torch_error_text(e.what_without_backtrace()));  // (several lines become one: error())
  } catch (const std::bad_alloc&) {
    // what() says only "std::bad_alloc"; the likely causes are worth naming. (A constant, printed
    // as it is: making a string now could fail again, out of the handler.)
    std::fputs("bitrobust: error: out of memory: this command needs more memory than the machine (or a limit such as "
               "`ulimit -v`) allows\n",
               stderr);
    return 1;
  } catch (const std::filesystem::filesystem_error& e) {
    // A path a command could not even inspect (a folder without search permission): named plainly.
    const std::string second = e.path2().empty() ? "" : " and " + e.path2().string();
    return error("cannot access " + e.path1().string() + second + ": " + e.code().message());
  } catch (const std::exception& e) {
    return error(e.what());
  }
  return 1;
}

}  // namespace bitrobust::cli
