#pragma once
// Writing result files: always atomically (temporary file, then rename), so a crash or a full disk
// never leaves a half-written result behind.
#include <nlohmann/json.hpp>
#include <string>

namespace bitrobust::report {

/// Writes `text` to `path` atomically; throws bitrobust::Error naming the path on failure.
void write_text_atomic(const std::string& path, const std::string& text);

void write_json_atomic(const std::string& path, const nlohmann::json& value);

}  // namespace bitrobust::report
