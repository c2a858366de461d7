// Atomic outputs (bitrobust/report/output.h): unique temporary files, and NOTE [Temporary files and
// signals].
#include "bitrobust/report/output.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
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

TEST(Output, AReplacedFileKeepsItsPermissionsANewOneGetsTheUmasks) {
  test_util::TempDir dir;
  const auto mode_of = [](const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
  };
  const mode_t mask = ::umask(022);
  ::umask(022);
  report::write_text_atomic(dir.file("new.json"), "1\n");
  EXPECT_EQ(mode_of(dir.file("new.json")), 0644u);
  // (0444: the mode is the replaced file's after the temporary file is written, so that a writer
  // other than root is not kept out of it; found by a review. Only root may replace a file of mode
  // 0444, as with `cp`: AFileThatIsNotWritableIsRefusedNotReplaced.)
  for (const mode_t mode : {0600u, 0640u, 0444u}) {
    if (mode == 0444u && ::geteuid() != 0) continue;
    ::chmod(dir.file("new.json").c_str(), mode);
    report::write_text_atomic(dir.file("new.json"), "2\n");
    EXPECT_EQ(mode_of(dir.file("new.json")), mode) << std::oct << mode;
  }
  // The temporary file is writable by its owner while it is written, whatever the old file's mode.
  ::chmod(dir.file("new.json").c_str(), 0444);
  const std::string tmp = report::create_temp_file_for(dir.file("new.json"), "--json file");
  EXPECT_EQ(mode_of(tmp) & 0200, 0200u);
  report::discard_temp_file(tmp);
  ::umask(mask);
}

// The rename would replace a read-only file as long as its folder is writable; `cp` and the shell
// refuse, and so does this (found by a review). As root the refusal is checked as user nobody.
TEST(Output, AFileThatIsNotWritableIsRefusedNotReplaced) {
  test_util::TempDir dir;
  const std::string target = dir.file("ro.json");
  { std::ofstream(target) << "old\n"; }
  ASSERT_EQ(::chmod(target.c_str(), 0444), 0);
  const auto attempt = [&target]() -> int {  // 0: refused as it should be
    try {
      report::write_text_atomic(target, "new\n", "--json file");
      return 1;
    } catch (const Error& e) {
      const std::string expected = "cannot write --json file " + target + ": the file exists and is not writable";
      return std::string(e.what()).rfind(expected, 0) == 0 ? 0 : 2;
    }
  };
  if (::geteuid() != 0) {
    EXPECT_EQ(attempt(), 0);
  } else {
    ASSERT_EQ(::chmod(dir.path().c_str(), 0777), 0);  // a folder nobody may write to: only the file refuses
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(3);
      if (::access(target.c_str(), R_OK) != 0) ::_exit(4);  // (a TMPDIR in a folder only root may enter)
      ::_exit(attempt());
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    if (WEXITSTATUS(status) == 4) GTEST_SKIP() << "user nobody cannot reach " << target;
    EXPECT_EQ(WEXITSTATUS(status), 0) << "1: replaced, 2: another message, 3: could not become nobody";
  }
  std::ifstream in(target);
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()), "old\n");
  EXPECT_EQ(regular_files_in(dir.path()), 1) << "no temporary file is left";
}

// A name of up to 255 bytes is legal; the temporary file's name adds 12 to it and is cut short
// instead of failing with "File name too long" (found by a review).
TEST(Output, AFileNameOfTheLongestLegalLengthIsWritten) {
  test_util::TempDir dir;
  for (const size_t length : {243u, 244u, 255u}) {
    const std::string target = dir.file(std::string(length - 5, 'k') + ".json");
    report::write_text_atomic(target, "long\n", "--json file");
    std::ifstream in(target);
    EXPECT_EQ(std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()), "long\n") << length;
    EXPECT_NO_THROW(report::check_output_path(target, "--json file"));
    const std::string tmp = report::create_temp_file_for(target, "--json file");
    EXPECT_EQ(std::filesystem::path(tmp).filename().string().size(), std::min<size_t>(255, length + 12)) << length;
    report::discard_temp_file(tmp);
  }
  EXPECT_EQ(regular_files_in(dir.path()), 3);
  // Cut between UTF-8 characters, not inside one (2-byte characters: the cut at 243 bytes would
  // fall inside the 122nd).
  std::string accents;
  for (int i = 0; i < 127; ++i) accents += "\xc3\xa9";  // e acute
  const std::string target = dir.file(accents + "x");
  const std::string tmp = report::create_temp_file_for(target, "--json file");
  const std::string name = std::filesystem::path(tmp).filename().string();
  EXPECT_EQ(name, "." + accents.substr(0, 242) + ".tmp." + name.substr(name.size() - 6));
  report::discard_temp_file(tmp);
  report::write_text_atomic(target, "accents\n", "--json file");
  EXPECT_TRUE(std::filesystem::exists(target));
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

TEST(Output, AWriteBeyondTheFileSizeLimitIsAnErrorAndLeavesNothing) {
  test_util::TempDir dir;
  const std::string target = dir.file("big.txt");
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // `ulimit -f 4`: without SIGXFSZ ignored, the signal would end the process
    const struct rlimit limit = {4096, 4096};
    if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) ::_exit(3);
    try {
      report::write_text_atomic(target, std::string(1 << 20, 'x'));
    } catch (const Error& e) {
      ::_exit(std::strstr(e.what(), "big.txt") != nullptr ? 0 : 2);
    }
    ::_exit(1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "ended by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: no error, 2: the error does not name the file, 3: setrlimit failed";
  EXPECT_EQ(regular_files_in(dir.path()), 0) << "the hidden temporary file must be gone";
}

TEST(Output, ATerminatingSignalRemovesATemporaryFolderBeingFilled) {
  test_util::TempDir dir;
  const std::string folder = dir.file("export.tmp1");
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // `bitrobust export` stopped while it writes its files
    std::filesystem::create_directory(folder);
    report::register_temp_folder(folder);
    for (int i = 0; i < 300; ++i) std::ofstream(folder + "/t" + std::to_string(i) + ".bin") << "codes";
    std::raise(SIGTERM);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
  EXPECT_FALSE(std::filesystem::exists(folder)) << "the folder and its 300 files must be gone";
}

TEST(Output, UnwritablePlacesAreFoundBeforeAnyWork) {
  test_util::TempDir dir;
  // access(W_OK) says yes to root even here; the probe file says no.
  EXPECT_ERROR_CONTAINS(report::check_output_path("/proc/bitrobust_result.json", "--json file"),
                        "cannot write --json file /proc/bitrobust_result.json");
  // A name longer than the file system allows (255 bytes) is refused before any work; one that
  // fits is written (AFileNameOfTheLongestLegalLengthIsWritten).
  EXPECT_ERROR_CONTAINS(report::check_output_path(dir.file(std::string(253, 'a') + ".pt"), "model file (--out)"),
                        "File name too long");
  EXPECT_NO_THROW(report::check_output_path(dir.file("fine.pt"), "model file (--out)"));
  EXPECT_EQ(regular_files_in(dir.path()), 0) << "the probe leaves nothing behind";
}

TEST(Output, AnOutputMayNeitherBeAnInputNorAnotherOutput) {
  test_util::TempDir dir;
  std::ofstream(dir.file("model.pt")) << "a model";
  std::filesystem::create_symlink(dir.file("model.pt"), dir.file("link.pt"));
  const std::vector<report::NamedPath> inputs = {{dir.file("model.pt"), "model file (--model)"}};
  EXPECT_ERROR_CONTAINS(report::check_distinct_paths({{dir.file("model.pt"), "--json file"}}, inputs),
                        "cannot write --json file " + dir.file("model.pt") +
                            ": it is the model file (--model) this command reads, which would be overwritten");
  // The same file under another name: a link, or a path through "..".
  EXPECT_ERROR_CONTAINS(report::check_distinct_paths({{dir.file("link.pt"), "--json file"}}, inputs), "model file");
  const std::string dotted = dir.file("sub/../model.pt");
  std::filesystem::create_directory(dir.file("sub"));
  EXPECT_ERROR_CONTAINS(report::check_distinct_paths({{dotted, "--json file"}}, inputs), "model file");
  // Two outputs that do not exist yet.
  EXPECT_ERROR_CONTAINS(report::check_distinct_paths({{dir.file("r.json"), "--json file"},
                                                      {dir.file("./r.json"), "--csv file"}},
                                                     {}),
                        "cannot write --csv file " + dir.file("./r.json") + ": it is also the --json file");
  // Outputs not given are skipped; distinct ones pass.
  EXPECT_NO_THROW(report::check_distinct_paths({{"", "--csv file"}, {dir.file("r.json"), "--json file"},
                                                {dir.file("r.csv"), "--csv file"}},
                                               inputs));
}

TEST(Output, ALinkIsWrittenThroughAndStaysALink) {
  test_util::TempDir dir;
  namespace fs = std::filesystem;
  fs::create_directory(dir.file("results"));
  std::ofstream(dir.file("results/r1.json")) << "old\n";
  fs::create_symlink("results/r1.json", dir.file("latest.json"));  // relative, as `ln -s` makes them
  report::write_text_atomic(dir.file("latest.json"), "new\n");
  EXPECT_TRUE(fs::is_symlink(dir.file("latest.json")));
  std::string text;
  std::getline(std::ifstream(dir.file("results/r1.json")), text);
  EXPECT_EQ(text, "new");
  EXPECT_EQ(regular_files_in(dir.path()), 1) << "the link (to a regular file), and no temporary file";
  EXPECT_EQ(regular_files_in(dir.file("results")), 1) << "nor next to its target";
  // Writers that need a file name (Torch archives) go the same way.
  const std::string tmp = report::create_temp_file_for(dir.file("latest.json"), "model file (--out)");
  EXPECT_EQ(fs::path(tmp).parent_path(), fs::canonical(dir.file("results")));
  std::ofstream(tmp) << "archive\n";
  report::commit_temp_file(tmp, dir.file("latest.json"), "model file (--out)");
  std::getline(std::ifstream(dir.file("results/r1.json")), text);
  EXPECT_EQ(text, "archive");
  EXPECT_TRUE(fs::is_symlink(dir.file("latest.json")));
  // A dangling link is refused, as `cp` refuses it, and stays as it was.
  fs::create_symlink("results/missing.json", dir.file("dangling.json"));
  EXPECT_ERROR_CONTAINS(report::write_text_atomic(dir.file("dangling.json"), "x"),
                        "cannot write file " + dir.file("dangling.json") +
                            ": it is a link to results/missing.json, which does not exist");
  EXPECT_ERROR_CONTAINS(report::check_output_path(dir.file("dangling.json"), "--json file"), "which does not exist");
  EXPECT_TRUE(fs::is_symlink(dir.file("dangling.json")));
  EXPECT_FALSE(fs::exists(dir.file("results/missing.json")));
  // A link loop is named as such.
  fs::create_symlink("loop_b.json", dir.file("loop_a.json"));
  fs::create_symlink("loop_a.json", dir.file("loop_b.json"));
  EXPECT_ERROR_CONTAINS(report::check_output_path(dir.file("loop_a.json"), "--json file"), "cannot be followed");
}

TEST(Output, TextGoesIntoDevicesAndPipesWhichAreNeverReplaced) {
  // NOTE [Special outputs]. Nothing outside the test folder is written: /dev/null is only asked about.
  test_util::TempDir dir;
  namespace fs = std::filesystem;
  if (fs::is_character_file("/dev/null")) {
    EXPECT_TRUE(report::is_special_output("/dev/null"));
    EXPECT_NO_THROW(report::check_output_path("/dev/null", "--plot file"));
    EXPECT_ERROR_CONTAINS(report::check_output_path("/dev/null", "model file (--out)", report::OutputKind::File),
                          "cannot write model file (--out) /dev/null: it is a device, a pipe or an open file "
                          "descriptor, and this output is only written to a regular file");
    // Two outputs to one character device do not overwrite each other.
    EXPECT_NO_THROW(report::check_distinct_paths({{"/dev/null", "--json file"}, {"/dev/null", "--csv file"}}, {}));
  }
  if (fs::is_character_file("/dev/full")) {
    // The write fails only when the buffer is flushed at close: the cause named is that failure's,
    // not what an earlier, successful call left in errno (fopen's terminal check: ENOTTY).
    EXPECT_ERROR_CONTAINS(report::write_text_atomic("/dev/full", "{}\n", "--json file"),
                          "cannot write --json file /dev/full: " + std::string(std::strerror(ENOSPC)));
    // With files among the outputs, the device is written first: its failure leaves every file as
    // it was, and no temporary file behind (found by a review: eval --csv /dev/full replaced
    // --json and --plot, then failed).
    test_util::TempDir kept_dir;
    { std::ofstream(kept_dir.file("kept.json")) << "old\n"; }
    EXPECT_ERROR_CONTAINS(report::write_texts_atomic({{kept_dir.file("kept.json"), "new\n"},
                                                      {"/dev/full", "x\n", "--csv file"},
                                                      {kept_dir.file("fresh.csv"), "new\n"}}),
                          "cannot write --csv file /dev/full: " + std::string(std::strerror(ENOSPC)) +
                              " (no output file was replaced)");
    std::ifstream kept(kept_dir.file("kept.json"));
    EXPECT_EQ(std::string((std::istreambuf_iterator<char>(kept)), std::istreambuf_iterator<char>()), "old\n");
    EXPECT_FALSE(fs::exists(kept_dir.file("fresh.csv")));
    for (const auto& entry : fs::directory_iterator(kept_dir.path())) {
      EXPECT_FALSE(test_util::contains(entry.path().filename().string(), ".tmp.")) << entry.path();
    }
  }
  EXPECT_FALSE(report::is_special_output(dir.file("new.json")));

  // A named pipe, through a link: the text reaches the reader, pipe and link stay. The read end is
  // opened first and without blocking, so that a writer that never comes fails the test, not hangs it.
  ASSERT_EQ(::mkfifo(dir.file("pipe").c_str(), 0600), 0);
  fs::create_symlink(dir.file("pipe"), dir.file("to_pipe.json"));
  EXPECT_ERROR_CONTAINS(report::check_output_path(dir.file("to_pipe.json"), "checkpoint", report::OutputKind::File),
                        "only written to a regular file");
  EXPECT_NO_THROW(report::check_output_path(dir.file("to_pipe.json"), "--json file"));
  const int reader = ::open(dir.file("pipe").c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(reader, 0);
  report::write_texts_atomic({{dir.file("r.json"), "{}\n"}, {dir.file("to_pipe.json"), "through the pipe\n"}});
  char buffer[64] = {};
  const ssize_t got = ::read(reader, buffer, sizeof(buffer) - 1);
  ::close(reader);
  EXPECT_EQ(std::string(buffer, got > 0 ? static_cast<size_t>(got) : 0), "through the pipe\n");
  EXPECT_TRUE(fs::is_fifo(dir.file("pipe")));
  EXPECT_TRUE(fs::is_symlink(dir.file("to_pipe.json")));
  EXPECT_EQ(regular_files_in(dir.path()), 1) << "r.json alone: no temporary file was left";

  // An open file descriptor naming a regular file (`--json /dev/stdout > log`): appended to, the
  // file neither truncated nor replaced.
  std::ofstream(dir.file("log")) << "table\n";
  const int log = ::open(dir.file("log").c_str(), O_WRONLY | O_APPEND);
  ASSERT_GE(log, 0);
  const std::string fd_path = "/proc/self/fd/" + std::to_string(log);
  EXPECT_TRUE(report::is_special_output(fd_path));
  report::write_text_atomic(fd_path, "json\n");
  ::close(log);
  std::ifstream in(dir.file("log"));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "table\njson\n");

  // A socket is refused.
  const int sock = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(sock, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  const std::string socket_path = dir.file("s.sock");
  if (socket_path.size() < sizeof(address.sun_path)) {
    std::strncpy(address.sun_path, socket_path.c_str(), sizeof(address.sun_path) - 1);
    ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    EXPECT_ERROR_CONTAINS(report::check_output_path(socket_path, "--json file"), "it is a block device or a socket");
    EXPECT_ERROR_CONTAINS(report::write_text_atomic(socket_path, "x"), "a block device or a socket");
    EXPECT_TRUE(fs::is_socket(socket_path));
  }
  ::close(sock);
}

TEST(Output, SeveralFilesAreWrittenAllOrNone) {
  test_util::TempDir dir;
  EXPECT_ERROR_CONTAINS(report::write_texts_atomic({{dir.file("r.json"), "{}\n"}, {"/proc/bitrobust_r.csv", "a,b\n"}}),
                        "/proc/bitrobust_r.csv");
  EXPECT_EQ(regular_files_in(dir.path()), 0) << "neither the first result nor a temporary file may stay";
  report::write_texts_atomic({{dir.file("r.json"), "{}\n"}, {"", "skipped"}, {dir.file("r.csv"), "a,b\n"}});
  EXPECT_EQ(regular_files_in(dir.path()), 2);
  std::ifstream in(dir.file("r.csv"));
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "a,b");
}

TEST(Output, JsonWithFileNamesThatAreNotUtf8IsStillWritten) {
  // Linux file names may hold any bytes; JSON holds UTF-8 only. The byte becomes U+FFFD.
  const nlohmann::json j = {{"model", std::string("bad\xff" "name.pt")}};
  EXPECT_EQ(report::json_text(j), "{\n  \"model\": \"bad\xef\xbf\xbdname.pt\"\n}\n");
}
