#pragma once
// Writing result files: always atomically (temporary file, then rename), so a crash or a full disk
// never leaves a half-written result behind.
#include <nlohmann/json.hpp>
#include <string>

namespace bitrobust::report {

/// Writes `text` to `path` atomically; throws bitrobust::Error naming the path on failure.
void write_text_atomic(const std::string& path, const std::string& text);

void write_json_atomic(const std::string& path, const nlohmann::json& value);

/// Throws bitrobust::Error if `path` cannot be written: empty, a folder, in a missing or read-only
/// folder. Commands call it for every output before they start work, so that an hour of training
/// is not lost to a typo in --out.
void check_output_path(const std::string& path, const std::string& what);

/// For writers that need a file name (Torch archives): a new, empty file next to `path` with a
/// unique name (mkstemp), so that no existing file (say a user's `out.pt.tmp`) is ever overwritten.
/// `what` names the output in errors ("model file", "checkpoint"): a missing folder, `path` being a
/// folder, or no permission throw bitrobust::Error before any work is written.
std::string create_temp_file_for(const std::string& path, const std::string& what);
/// Renames `tmp` over `path`; on failure removes `tmp` and throws bitrobust::Error naming `path`.
void commit_temp_file(const std::string& tmp, const std::string& path, const std::string& what);
/// Removes a temporary file after a failed write (no error if it is gone).
void discard_temp_file(const std::string& tmp);

}  // namespace bitrobust::report
