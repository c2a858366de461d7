#pragma once
// A one-line progress bar on stderr: done/total, caller's statistics, elapsed time and ETA.
// Redrawn in place on a terminal; elsewhere (logs, CI) only the final line is printed.
#include <chrono>
#include <cstdint>
#include <string>

namespace bitrobust::report {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, bool enabled);
  /// True when a redraw is due (at most ~5 per second, and always at the end).
  bool due(int64_t done) const;
  void update(int64_t done, const std::string& stats);
  /// The final line: `done` of the total (-1: all of it, the usual end), then `note` (why it ended early).
  void finish(const std::string& stats, int64_t done = -1, const std::string& note = "");
  double elapsed() const;

 private:
  std::string label_;
  int64_t total_;
  bool enabled_;
  bool interactive_;
  std::chrono::steady_clock::time_point start_;
  mutable std::chrono::steady_clock::time_point last_draw_;
};

/// "1m23s" style duration.
std::string format_duration(double seconds);

}  // namespace bitrobust::report
