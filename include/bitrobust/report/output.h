#pragma once
// Writing result files: always atomically (temporary file, then rename), so a crash or a full disk
// never leaves a half-written result behind.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace bitrobust::report {

/// Writes `text` to `path` atomically (a temporary file renamed into place; a device or pipe is
/// appended to in place, see is_special_output); throws bitrobust::Error naming `what` (the option
/// the user gave it with, e.g. "--json file") and the path on failure.
void write_text_atomic(const std::string& path, const std::string& text, const std::string& what = "file");

void write_json_atomic(const std::string& path, const nlohmann::json& value, const std::string& what = "file");
/// The text write_json_atomic writes: indented, bytes that are not UTF-8 (file names may hold
/// any) replaced by U+FFFD.
std::string json_text(const nlohmann::json& value);

/// One text output: its path ("" for none), its contents, and what it is for error messages.
struct TextOutput {
  std::string path;
  std::string text;
  std::string what = "file";
};

/// Writes several files as one: each (path, text) goes to its own temporary file first, and only
/// when all are written are they renamed into place; a failure leaves none of them (and no
/// temporary file) behind. Paths that are "" are skipped; special outputs (is_special_output) are
/// written in place first, before any file is renamed: a failure there leaves every file as it was.
void write_texts_atomic(const std::vector<TextOutput>& files);

/// write_texts_atomic in two steps, for outputs written together with a file another writer makes
/// (a Torch archive, io::save_model_file): the constructor writes every text to its temporary file
/// (a failure leaves none), commit() writes the special outputs and then renames the files into place.
/// Destroyed uncommitted (the other file failed), it removes its temporary files.
class StagedTexts {
 public:
  explicit StagedTexts(const std::vector<TextOutput>& files);
  ~StagedTexts();
  StagedTexts(const StagedTexts&) = delete;
  StagedTexts& operator=(const StagedTexts&) = delete;
  /// Writes the outputs that are written in place (devices, pipes: NOTE [Special outputs]), then
  /// renames the others into place.
  void commit();
  /// Only the first half of commit(), for a caller with a file of its own to rename between the two
  /// (a model file); `other_files`: such a file is waiting, for the message of a failure.
  void write_special_outputs(bool other_files);

 private:
  std::vector<std::pair<std::string, TextOutput>> staged_;  // (temporary, the output without its text)
  std::vector<TextOutput> special_;                        // written in place
};

/// What an output may be: text (JSON, CSV, SVG, pattern files) may also go to a character device,
/// a pipe or an open file descriptor (`--json /dev/stderr`), appended in place; a file (Torch
/// archives: models, checkpoints) must be a regular file. Block devices and sockets are refused.
/// See NOTE [Special outputs] in src/report/output.cpp.
enum class OutputKind { Text, File };

/// Throws bitrobust::Error if `path` cannot be written: empty, a folder, in a missing or read-only
/// folder, a block device or socket, or (OutputKind::File) a device, pipe or file descriptor. Commands call it for every output
/// before they start work, so that an hour of training is not lost to a typo in --out.
void check_output_path(const std::string& path, const std::string& what, OutputKind kind = OutputKind::Text);

/// Whether `path` is written in place rather than renamed over: a character device or a pipe (links
/// followed), or a name of an open file descriptor (/dev/stdout, /dev/fd/N, /proc/self/fd/N).
bool is_special_output(const std::string& path);

/// A file a command reads or writes, with the name the user knows it by ("--json file").
struct NamedPath {
  std::string path;  ///< "" = not given (skipped)
  std::string what;
};
/// Throws bitrobust::Error if two outputs, or an output and an input, are one file (the same path
/// once links and "." are resolved, or the same existing file): writing one would destroy the other.
void check_distinct_paths(const std::vector<NamedPath>& outputs, const std::vector<NamedPath>& inputs);

/// The file a write to `path` replaces: `path` itself, or the file a link at `path` points to (links
/// are written through and stay links); a dangling link throws bitrobust::Error. A special output
/// (is_special_output) is returned as given.
std::string output_file_behind(const std::string& path, const std::string& what);
/// For writers that need a file name (Torch archives): a new, empty file next to `path` with a
/// unique name (mkstemp), so that no existing file (say a user's `out.pt.tmp`) is ever overwritten.
/// `what` names the output in errors ("model file", "checkpoint"): a missing folder, `path` being a
/// folder, or no permission throw bitrobust::Error before any work is written.
std::string create_temp_file_for(const std::string& path, const std::string& what);
/// Renames `tmp` over `path`; on failure removes `tmp` and throws bitrobust::Error naming `path`.
void commit_temp_file(const std::string& tmp, const std::string& path, const std::string& what);
/// Writes the temporary file's data to the disk (fsync) before it is committed; Error naming `what`
/// and `path` if that fails.
void sync_temp_file(const std::string& tmp, const std::string& path, const std::string& what);
/// Removes a temporary file after a failed write (no error if it is gone).
void discard_temp_file(const std::string& tmp);
/// A new, empty folder next to `path` with a unique name (mkdtemp: never a folder that already
/// exists, or a link), for an output built of several files (an export) and renamed into place when
/// complete. A run stopped by SIGINT, SIGTERM or SIGHUP removes its files and the folder, as it
/// removes temporary files; unregister it once it has been renamed into place or removed.
std::string create_temp_folder_for(const std::string& path, const std::string& what);
void register_temp_folder(const std::string& path);
void unregister_temp_folder(const std::string& path);

}  // namespace bitrobust::report
