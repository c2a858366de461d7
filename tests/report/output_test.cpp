// Atomic outputs (bitrobust/report/output.h): unique temporary files, and NOTE [Temporary files and
// signals].
#include "bitrobust/report/output.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <string>

#include "bitrobust/common/error.h"
#include "test_util.h"

using namespace bitrobust;

namespace {
int regular_files_in(const std::filesystem::path& dir) {
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) files += entry.is_regular_file();
  return files;
}
}  // namespace

TEST(Output, TextIsWrittenWholeAndNothingElseStays) {
  test_util::TempDir dir;
  report::write_text_atomic(dir.file("a.txt"), "hello\n");
  std::ifstream in(dir.file("a.txt"));
  std::string text;
  std::getline(in, text);
  EXPECT_EQ(text, "hello");
  EXPECT_EQ(regular_files_in(dir.path()), 1);
  EXPECT_ERROR_CONTAINS(report::write_text_atomic(dir.file("no/b.txt"), "x"), "does not exist");
  EXPECT_ERROR_CONTAINS(report::check_output_path("", "--json file"), "cannot write --json file: empty file name");
  EXPECT_EQ(regular_files_in(dir.path()), 1);
}

TEST(Output, ATerminatingSignalRemovesTheTemporaryFileBeingWritten) {
  test_util::TempDir dir;
  const std::string target = dir.file("result.json");
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // a run stopped by `timeout` while it writes its output
    const std::string tmp = report::create_temp_file_for(target, "file");
    std::ofstream(tmp) << "half a result";
    std::raise(SIGTERM);
    ::_exit(0);  // not reached: the default action ends the process
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the child should end by the signal, as it would without the cleanup";
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
  EXPECT_EQ(regular_files_in(dir.path()), 0) << "the hidden temporary file must be gone";
}
