// The CLI's contract: bad input gives one clear message and a non-zero exit, never a trace or abort.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <string>

#include "test_util.h"

namespace {

struct RunResult {
  int status;
  std::string output;
};

RunResult run_cli(const std::string& args) {
  const std::string command = std::string(BITROBUST_CLI_PATH) + " " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  std::string output;
  std::array<char, 4096> buf{};
  while (pipe && fgets(buf.data(), buf.size(), pipe)) output += buf.data();
  const int status = pipe ? pclose(pipe) : -1;
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), output};
}

void expect_clean_failure(const std::string& args, const std::string& message_part) {
  const RunResult r = run_cli(args);
  EXPECT_NE(r.status, 0) << args;
  EXPECT_LT(r.status, 128) << "crashed: " << args << "\n" << r.output;
  EXPECT_NE(r.output.find(message_part), std::string::npos) << args << "\n" << r.output;
  EXPECT_EQ(r.output.find("Exception raised from"), std::string::npos) << "stack trace leaked:\n" << r.output;
  EXPECT_EQ(r.output.find("terminate called"), std::string::npos) << r.output;
}

}  // namespace

TEST(Cli, HelpListsSubcommandsAndExitsZero) {
  const RunResult r = run_cli("--help");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.output.find("train"), std::string::npos);
  EXPECT_NE(r.output.find("test"), std::string::npos);
  EXPECT_EQ(run_cli("train --help").status, 0);
  EXPECT_EQ(run_cli("test --help").status, 0);
}

TEST(Cli, UnknownFlagsAndBadValuesFailCleanly) {
  expect_clean_failure("train --dataset fashion-mnist --out x.pt --no-such-flag", "no-such-flag");
  expect_clean_failure("test --model m.pt --device tpu", "--device");
  expect_clean_failure("test --model m.pt --batch -3", "--batch");
  expect_clean_failure("train --dataset imagenet --out /tmp/x.pt --epochs 1", "imagenet");
  expect_clean_failure("train --dataset fashion-mnist --model vgg --out /tmp/x.pt", "unknown model 'vgg'");
  expect_clean_failure("frobnicate", "subcommand");
}

TEST(Cli, MissingAndCorruptModelFilesFailCleanly) {
  bitrobust::test_util::TempDir dir;
  expect_clean_failure("test --model " + dir.file("missing.pt"), "does not exist");
  { std::ofstream(dir.file("junk.pt")) << "junk"; }
  expect_clean_failure("test --model " + dir.file("junk.pt") + " --dataset fashion-mnist", "junk.pt");
}

TEST(Cli, MissingDataFolderFailsCleanly) {
  bitrobust::test_util::TempDir dir;
  expect_clean_failure("train --dataset mnist --data-root " + dir.file("nowhere") + " --out " + dir.file("m.pt"),
                       "nowhere");
}
