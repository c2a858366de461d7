#include "bitrobust/report/output.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <vector>

#include "bitrobust/common/error.h"

namespace bitrobust::report {

namespace fs = std::filesystem;

namespace {
// The umask, read without changing it (umask(2) can only be read by setting it, which would race
// with other threads creating files). Linux reports it in /proc/self/status; 022 otherwise.
mode_t process_umask() {
  std::FILE* status = std::fopen("/proc/self/status", "r");
  mode_t mask = 022;
  if (status == nullptr) return mask;
  char line[256];
  while (std::fgets(line, sizeof line, status) != nullptr) {
    unsigned value = 0;
    if (std::sscanf(line, "Umask: %o", &value) == 1) {
      mask = static_cast<mode_t>(value);
      break;
    }
  }
  std::fclose(status);
  return mask;
}

// NOTE [Temporary files and signals]: a run stopped by SIGINT/SIGTERM/SIGHUP (Ctrl-C, `timeout`, a
// closed terminal) while it writes an output would leave its hidden temporary file behind. The
// temporary files being written are kept in a fixed table that a signal handler can read
// (async-signal-safe: plain char arrays, atomics, unlink); the handler removes them and re-raises
// the signal with its default action, so the process still ends as it would have. Handlers are only
// installed where the disposition is the default one.
constexpr int kMaxLiveTemps = 8;
constexpr size_t kMaxTempPath = 4096;
char g_live_paths[kMaxLiveTemps][kMaxTempPath];
std::atomic<bool> g_live_claimed[kMaxLiveTemps];  // a writer owns the slot
std::atomic<bool> g_live_ready[kMaxLiveTemps];    // its path is complete: the handler may use it
std::atomic<bool> g_live_folder[kMaxLiveTemps];   // a folder of plain files, not a file

// Empties and removes a folder of plain files with system calls only (async-signal-safe).
void remove_folder_of_files(const char* path) {
#if defined(__linux__) && defined(SYS_getdents64)
  // O_NOFOLLOW: never empty a folder a link points to.
  const int fd = ::open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return;
  alignas(8) char buf[4096];
  // Some file systems (NFS, FUSE) may skip entries when a folder changes while it is read: rescan.
  for (int pass = 0; pass < 4; ++pass) {
    ::lseek(fd, 0, SEEK_SET);
    for (;;) {
      const long n = ::syscall(SYS_getdents64, fd, buf, sizeof buf);
      if (n <= 0) break;
      for (long pos = 0; pos < n;) {
        // struct linux_dirent64: u64 d_ino, s64 d_off, u16 d_reclen, u8 d_type, char d_name[]
        unsigned short reclen;
        std::memcpy(&reclen, buf + pos + 16, sizeof reclen);
        const char* name = buf + pos + 19;
        if (!(name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0')))) ::unlinkat(fd, name, 0);
        pos += reclen;
      }
    }
    if (::rmdir(path) == 0 || errno != ENOTEMPTY) break;
  }
  ::close(fd);
#else
  ::rmdir(path);
#endif
}

// While a temporary file is made and not yet in the table (SignalsHeld), a signal is only noted,
// and raised again when the file is in the table: blocking it on the thread that makes the file is
// not enough, since the kernel then hands it to another thread (found by a review).
std::atomic<int> g_signals_held{0};
std::atomic<int> g_held_signal{0};

extern "C" void remove_live_temps_and_reraise(int sig) {
  // Noted before the count is read, so that a holder leaving meanwhile finds it (a review of the first
  // version found a signal noted after the holder had looked, and lost).
  g_held_signal.store(sig);
  if (g_signals_held.load() > 0) return;  // the holder raises it again when its file is in the table
  for (int i = 0; i < kMaxLiveTemps; ++i) {
    if (!g_live_ready[i].load()) continue;
    if (g_live_folder[i].load()) {
      remove_folder_of_files(g_live_paths[i]);
    } else {
      ::unlink(g_live_paths[i]);
    }
  }
  // A holder that began while the table was emptied may be making a file this pass did not see: it
  // raises the noted signal again once the file is in the table, and that pass removes it.
  if (g_signals_held.load() > 0) return;
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

void install_signal_cleanup() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
      struct sigaction current {};
      if (::sigaction(sig, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
        std::signal(sig, remove_live_temps_and_reraise);
      }
    }
    // A write beyond the file size limit (ulimit -f) would end the process by SIGXFSZ with its
    // temporary files left behind; ignored, the write fails with EFBIG and is reported as any
    // failed write, and the temporary files are removed.
    struct sigaction current {};
    if (::sigaction(SIGXFSZ, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) std::signal(SIGXFSZ, SIG_IGN);
  });
}

void register_live_temp(const std::string& path, bool folder = false) {
  install_signal_cleanup();
  if (path.size() >= kMaxTempPath) return;
  for (int i = 0; i < kMaxLiveTemps; ++i) {
    bool expected = false;
    if (!g_live_claimed[i].compare_exchange_strong(expected, true)) continue;
    std::memcpy(g_live_paths[i], path.c_str(), path.size() + 1);
    g_live_folder[i].store(folder);
    g_live_ready[i].store(true);
    return;
  }
}

// Holds SIGINT, SIGTERM and SIGHUP back while a temporary file is made and registered, so that no
// signal can end the process between the two (one arriving meanwhile is delivered on release,
// when the file is in the table): blocked on this thread, and only noted by the handler on any
// other (g_signals_held), then raised again here.
class SignalsHeld {
 public:
  SignalsHeld() {
    install_signal_cleanup();
    g_signals_held.fetch_add(1);
    sigset_t set;
    sigemptyset(&set);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, sig);
    ::pthread_sigmask(SIG_BLOCK, &set, &previous_);
  }
  ~SignalsHeld() {
    g_signals_held.fetch_sub(1);
    ::pthread_sigmask(SIG_SETMASK, &previous_, nullptr);  // (one blocked here is handled now)
    if (g_signals_held.load() == 0) {
      // To the process, not this thread: a thread that holds the signals back (an OpenMP worker,
      // in a library caller) would keep it pending for ever.
      const int held = g_held_signal.exchange(0);
      if (held != 0) ::kill(::getpid(), held);
    }
  }
  SignalsHeld(const SignalsHeld&) = delete;
  SignalsHeld& operator=(const SignalsHeld&) = delete;

 private:
  sigset_t previous_;
};

void unregister_live_temp(const std::string& path) {
  for (int i = 0; i < kMaxLiveTemps; ++i) {
    if (g_live_ready[i].load() && path == g_live_paths[i]) {
      g_live_ready[i].store(false);
      g_live_claimed[i].store(false);
      return;
    }
  }
}
}  // namespace

// The temporary file next to `target` in `parent` that create_temp_file_for returns.
std::string create_temp_file_in(const fs::path& parent, const fs::path& target, const std::string& what,
                                const std::string& path);

void register_temp_folder(const std::string& path) { register_live_temp(path, /*folder=*/true); }

namespace {
fs::path parent_of(const fs::path& target) { return target.has_parent_path() ? target.parent_path() : fs::path("."); }

// The longest name the folder's file system takes (255 bytes on most; eCryptfs 143).
size_t name_max(const fs::path& parent) {
  const long max = ::pathconf(parent.c_str(), _PC_NAME_MAX);
  return max > 0 ? static_cast<size_t>(max) : 255;
}

// mkstemp's pattern for a temporary file or folder next to `target`: ".NAME.tmp.XXXXXX". A name as
// long as the limit is legal, but that pattern is 12 bytes longer: a long NAME is cut short in it,
// not refused as too long (found by a review: 244-byte names failed with "File name too long").
std::string temp_name_pattern(const fs::path& parent, const fs::path& target) {
  const std::string suffix = ".tmp.XXXXXX";
  std::string name = target.filename().string();
  const size_t max = name_max(parent);
  if (1 + name.size() + suffix.size() > max && max > 1 + suffix.size()) {
    name.resize(max - 1 - suffix.size());
    // Not inside a UTF-8 character: file systems that require UTF-8 names would refuse the rest.
    while (!name.empty() && (static_cast<unsigned char>(name.back()) & 0xC0) == 0x80) name.pop_back();
    if (!name.empty() && static_cast<unsigned char>(name.back()) >= 0xC0) name.pop_back();
  }
  return (parent / ("." + name + suffix)).string();
}
}  // namespace

std::string create_temp_folder_for(const std::string& path, const std::string& what) {
  const fs::path target(path);
  const fs::path parent = parent_of(target);
  const std::string pattern = temp_name_pattern(parent, target);
  std::vector<char> name(pattern.begin(), pattern.end());
  name.push_back('\0');
  {
    const SignalsHeld held;
    BR_CHECK(::mkdtemp(name.data()) != nullptr, "cannot write ", what, " ", path, ": ", std::strerror(errno));
    register_temp_folder(name.data());
  }
  // mkdtemp makes the folder private (0700); give the result the permissions of any new folder.
  ::chmod(name.data(), 0777 & ~process_umask());
  return std::string(name.data());
}
void unregister_temp_folder(const std::string& path) { unregister_live_temp(path); }

namespace {
enum class Target { File, InPlace, Refused };

// NOTE [Special outputs]: an output is renamed into place from a temporary file, except where that
// would replace something that is not a file of results: a character device or a pipe (as root
// even /dev/null), and paths naming one of this process's open files (/dev/stdout, /dev/fd/N,
// /proc/self/fd/N), which may lead to a file the shell opened (`--json /dev/stdout > log`). Text
// is appended to those in place; Torch archives, which need a named file, are refused there. Block
// devices and sockets are refused for every output.
Target target_of(const std::string& path) {
  const std::string p = fs::path(path).lexically_normal().string();
  if (p == "/dev/stdout" || p == "/dev/stderr" || p.rfind("/dev/fd/", 0) == 0 || p.rfind("/proc/self/fd/", 0) == 0) {
    return Target::InPlace;
  }
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);  // follows links as open() does
  if (ec || !fs::exists(status) || fs::is_regular_file(status) || fs::is_directory(status)) return Target::File;
  return fs::is_character_file(status) || fs::is_fifo(status) ? Target::InPlace : Target::Refused;
}
}  // namespace

bool is_special_output(const std::string& path) { return target_of(path) == Target::InPlace; }

std::string output_file_behind(const std::string& path, const std::string& what) {
  std::error_code ec;
  if (path.empty() || is_special_output(path) || !fs::is_symlink(fs::symlink_status(path, ec))) return path;
  // A link is written through, as `cp` and shell redirection do: replacing the link by a file
  // would leave its target stale. A dangling link is refused, as `cp` refuses it.
  std::error_code link_ec;
  const std::string link_text = fs::read_symlink(path, link_ec).string();
  const fs::path target = fs::canonical(path, ec);
  if (ec) {
    throw Error("cannot write " + what + " " + path + ": it is a link to " + link_text +
                (ec == std::errc::no_such_file_or_directory ? std::string(", which does not exist")
                                                            : ", which cannot be followed: " + ec.message()));
  }
  return target.string();
}

namespace {
// The checks of check_output_path short of its probe file: "" for an output written in place, else
// the file a rename will replace (links resolved).
std::string checked_output_file(const std::string& given, const std::string& what, OutputKind kind) {
  BR_CHECK(!given.empty(), "cannot write ", what, ": empty file name");
  switch (target_of(given)) {  // NOTE [Special outputs]
    case Target::InPlace:
      BR_CHECK(kind == OutputKind::Text, "cannot write ", what, " ", given,
               ": it is a device, a pipe or an open file descriptor, and this output is only written to a "
               "regular file");
      BR_CHECK(::access(given.c_str(), W_OK) == 0, "cannot write ", what, " ", given, ": ", std::strerror(errno));
      return "";
    case Target::Refused:
      throw Error("cannot write " + what + " " + given + ": it is a block device or a socket, not a regular file");
    case Target::File:
      break;
  }
  const std::string path = output_file_behind(given, what);
  const fs::path target(path);
  std::error_code ec;
  BR_CHECK(!fs::is_directory(target, ec), "cannot write ", what, " ", path, ": it is a folder");
  const fs::path parent = parent_of(target);
  // (The probe's temporary name is cut to fit, temp_name_pattern: the name itself is checked here.)
  BR_CHECK(target.filename().string().size() <= name_max(parent), "cannot write ", what, " ", path, ": ",
           std::strerror(ENAMETOOLONG));
  BR_CHECK(fs::is_directory(parent, ec), "cannot write ", what, " ", path, ": folder ", parent.string(),
           " does not exist");
  BR_CHECK(::access(parent.c_str(), W_OK) == 0, "cannot write ", what, " ", path, ": folder ", parent.string(),
           " is not writable");
  // The rename would replace a file its owner made read-only (or one of another user's that this
  // user may not write) as long as the folder is writable; `cp` and the shell's `>` refuse it, and
  // so does this (found by a review). Root may write any file, as with `cp`.
  if (fs::is_regular_file(target, ec) && ::faccessat(AT_FDCWD, path.c_str(), W_OK, AT_EACCESS) != 0) {
    throw Error("cannot write " + what + " " + path + ": the file exists and is not writable (" +
                std::strerror(errno) + ")");
  }
  return path;
}
}  // namespace

void check_output_path(const std::string& given, const std::string& what, OutputKind kind) {
  const std::string path = checked_output_file(given, what, kind);
  if (path.empty()) return;
  // access() says yes to root everywhere (/proc included) and knows nothing of name lengths: the
  // temporary file the write will need is made and removed now, before any work.
  discard_temp_file(create_temp_file_in(parent_of(path), path, what, path));
}

namespace {
bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec_a, ec_b;
  // Two outputs to one character device (/dev/null, a terminal) do not overwrite each other.
  if (fs::is_character_file(a, ec_a) && fs::is_character_file(b, ec_b)) return false;
  if (fs::exists(a, ec_a) && fs::exists(b, ec_b)) {
    std::error_code ec;
    if (fs::equivalent(a, b, ec)) return true;  // also hard links, and links to one file
  }
  const fs::path ca = fs::weakly_canonical(fs::absolute(a, ec_a), ec_a);
  const fs::path cb = fs::weakly_canonical(fs::absolute(b, ec_b), ec_b);
  if (ec_a || ec_b) {
    std::error_code ec;
    return fs::absolute(a, ec).lexically_normal() == fs::absolute(b, ec).lexically_normal();
  }
  return ca == cb;
}
}  // namespace

void check_distinct_paths(const std::vector<NamedPath>& outputs, const std::vector<NamedPath>& inputs) {
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (outputs[i].path.empty()) continue;
    for (size_t k = 0; k < i; ++k) {
      if (outputs[k].path.empty()) continue;
      BR_CHECK(!same_file(outputs[i].path, outputs[k].path), "cannot write ", outputs[i].what, " ", outputs[i].path,
               ": it is also the ", outputs[k].what, "; give each output its own name");
    }
    for (const NamedPath& input : inputs) {
      if (input.path.empty()) continue;
      BR_CHECK(!same_file(outputs[i].path, input.path), "cannot write ", outputs[i].what, " ", outputs[i].path,
               ": it is the ", input.what, " this command reads, which would be overwritten");
    }
  }
}

std::string create_temp_file_for(const std::string& given, const std::string& what) {
  // (The same checks as check_output_path; the file made here is its own probe.)
  const std::string path = checked_output_file(given, what, OutputKind::File);
  return create_temp_file_in(parent_of(path), path, what, path);
}

std::string create_temp_file_in(const fs::path& parent, const fs::path& target, const std::string& what,
                                const std::string& path) {
  const std::string pattern = temp_name_pattern(parent, target);
  std::vector<char> name(pattern.begin(), pattern.end());
  name.push_back('\0');
  int fd = -1;
  {
    const SignalsHeld held;
    fd = ::mkstemp(name.data());
    BR_CHECK(fd >= 0, "cannot write ", what, " ", path, ": ", std::strerror(errno));
    register_live_temp(name.data());
  }
  // mkstemp makes the file private (0600); give the result the permissions of any new file (a file
  // replaced gets its own back in commit_temp_file, once written: a read-only mode here would keep
  // the writer out).
  ::fchmod(fd, 0666 & ~process_umask());
  ::close(fd);
  return std::string(name.data());
}

void discard_temp_file(const std::string& tmp) {
  std::remove(tmp.c_str());
  unregister_live_temp(tmp);
}

// A rename is atomic for readers, but after a crash or power loss the new name can point at data
// that never reached the disk (an empty result file in place of the old one): the data goes first,
// when the temporary file is written, so that a failed write-back (EIO, or a full disk reported
// only now) comes before any of a command's outputs is renamed into place. A file system that
// cannot sync (EINVAL) is taken as it is.
void sync_temp_file(const std::string& tmp, const std::string& path, const std::string& what) {
  const int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
  BR_CHECK(fd >= 0, "cannot write ", what, " ", path, ": ", std::strerror(errno));
  const int error = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  BR_CHECK(error == 0 || error == EINVAL || error == EROFS, "cannot write ", what, " ", path, ": ", std::strerror(error));
}

void commit_temp_file(const std::string& tmp, const std::string& path, const std::string& what) {
  std::string target;
  try {  // (the link may have changed since the temporary file was made)
    target = output_file_behind(path, what);
    BR_CHECK(target_of(target) == Target::File, "cannot write ", what, " ", path,
             ": it has become a device, pipe or socket, which a rename would replace");
  } catch (...) {
    discard_temp_file(tmp);
    throw;
  }
  // A file replaced keeps its permissions (a results file made private stays private; found by a
  // review).
  struct stat replaced {};
  if (::stat(target.c_str(), &replaced) == 0 && S_ISREG(replaced.st_mode)) ::chmod(tmp.c_str(), replaced.st_mode & 0777);
  std::error_code ec;
  fs::rename(tmp, target, ec);
  if (ec) {
    discard_temp_file(tmp);
    throw Error("cannot write " + what + " " + path + ": " + ec.message());
  }
  unregister_live_temp(tmp);
}

namespace {
// A temporary file next to `path` holding `text`; on failure nothing is left and Error is thrown.
std::string write_temp_text(const TextOutput& output) {
  const std::string& path = output.path;
  const std::string tmp = create_temp_file_for(path, output.what);
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    discard_temp_file(tmp);
    throw Error("cannot write " + output.what + " " + path + ": " + std::strerror(errno));
  }
  const bool ok = std::fwrite(output.text.data(), 1, output.text.size(), f) == output.text.size();
  const bool closed = std::fclose(f) == 0;
  if (!ok || !closed) {
    discard_temp_file(tmp);
    throw Error("cannot write " + output.what + " " + path + ": write failed (disk full?)");
  }
  try {
    sync_temp_file(tmp, path, output.what);
  } catch (...) {
    discard_temp_file(tmp);
    throw;
  }
  return tmp;
}

// NOTE [Special outputs]: appended in place, after what the program printed before (stdout may be
// the same file); a reader that has gone away is an error naming the output, not a silent SIGPIPE.
void write_in_place(const TextOutput& output) {
  const std::string& path = output.path;
  const std::string& text = output.text;
  std::fflush(nullptr);
  struct sigaction ignore {}, saved {};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ignore, &saved);
  // errno is read where a call failed: a buffered write fails only at fclose (a full disk, /dev/full),
  // and errno left by a call that succeeded (fopen's terminal check: ENOTTY) would name no cause.
  errno = 0;
  std::FILE* f = std::fopen(path.c_str(), "ab");
  int error = f == nullptr ? (errno != 0 ? errno : EIO) : 0;
  if (f != nullptr) {
    errno = 0;
    if (std::fwrite(text.data(), 1, text.size(), f) != text.size()) error = errno != 0 ? errno : EIO;
    errno = 0;
    if (std::fclose(f) != 0 && error == 0) error = errno != 0 ? errno : EIO;
  }
  ::sigaction(SIGPIPE, &saved, nullptr);
  BR_CHECK(error == 0, "cannot write ", output.what, " ", path, ": ", std::strerror(error));
}
}  // namespace

void write_text_atomic(const std::string& path, const std::string& text, const std::string& what) {
  BR_CHECK(!path.empty(), "cannot write ", what, ": empty file name");
  write_texts_atomic({{path, text, what}});
}

void write_texts_atomic(const std::vector<TextOutput>& files) {
  StagedTexts(files).commit();
}

StagedTexts::StagedTexts(const std::vector<TextOutput>& files) {
  try {
    for (const TextOutput& file : files) {
      if (file.path.empty()) continue;
      if (is_special_output(file.path)) {
        special_.push_back(file);
      } else {
        // (the text is in the temporary file now: only where it goes is kept)
        staged_.emplace_back(write_temp_text(file), TextOutput{file.path, "", file.what});
      }
    }
  } catch (...) {
    for (const auto& item : staged_) discard_temp_file(item.first);
    throw;
  }
}

StagedTexts::~StagedTexts() {
  for (const auto& item : staged_) discard_temp_file(item.first);
}

void StagedTexts::write_special_outputs(bool other_files) {
  const auto special = std::move(special_);
  special_.clear();
  for (const auto& file : special) {
    try {
      write_in_place(file);
    } catch (const Error& e) {
      if (staged_.empty() && !other_files) throw;
      throw Error(std::string(e.what()) + " (no output file was replaced)");
    }
  }
}

void StagedTexts::commit() {
  // Outputs written in place go first: they fail more often than a rename (a full device, a reader
  // gone), and while they fail no file has been replaced yet (the destructor discards the staged
  // ones). (Found by a review: --csv /dev/full failed after --json and --plot were replaced.)
  write_special_outputs(false);
  // Moved out first: whatever happens below, the destructor has nothing left to discard twice.
  const auto staged = std::move(staged_);
  staged_.clear();
  for (size_t i = 0; i < staged.size(); ++i) {
    try {
      commit_temp_file(staged[i].first, staged[i].second.path, staged[i].second.what);
    } catch (...) {  // (a rename failing after others succeeded: the rest are not left as temporaries)
      for (size_t k = i + 1; k < staged.size(); ++k) discard_temp_file(staged[k].first);
      throw;
    }
  }
}

std::string json_text(const nlohmann::json& value) {
  // File names need not be UTF-8 (Linux allows any bytes): replace what JSON cannot hold rather
  // than fail after all the work.
  return value.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

void write_json_atomic(const std::string& path, const nlohmann::json& value, const std::string& what) {
  write_text_atomic(path, json_text(value), what);
}

}  // namespace bitrobust::report
