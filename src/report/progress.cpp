#include "bitrobust/report/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace bitrobust::report {

ProgressBar::ProgressBar(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled), interactive_(isatty(fileno(stderr)) != 0),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

bool ProgressBar::due(int64_t done) const {
  if (!enabled_ || !interactive_) return false;
  const auto now = std::chrono::steady_clock::now();
  if (done < total_ && now - last_draw_ < std::chrono::milliseconds(200)) return false;
  last_draw_ = now;
  return true;
}

double ProgressBar::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long s = std::lround(seconds);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s / 60) % 60);
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%lds", s);
  return buf;
}

void ProgressBar::update(int64_t done, const std::string& stats) {
  if (!enabled_ || !interactive_) return;
  constexpr int kWidth = 24;
  const double fraction = total_ > 0 ? static_cast<double>(done) / total_ : 1.0;
  const int filled = static_cast<int>(fraction * kWidth);
  std::string bar(filled, '#');
  bar.resize(kWidth, '.');
  const double t = elapsed();
  const double eta = fraction > 0 ? t / fraction - t : NAN;
  std::fprintf(stderr, "\r%s [%s] %lld/%lld  %s  %s ETA %s\033[K", label_.c_str(), bar.c_str(),
               static_cast<long long>(done), static_cast<long long>(total_), stats.c_str(), format_duration(t).c_str(),
               format_duration(eta).c_str());
  std::fflush(stderr);
}

void ProgressBar::finish(const std::string& stats, int64_t done, const std::string& note) {
  if (!enabled_) return;
  // (on a terminal the line is cleared after the text: the last redraw, with its bar and ETA, was longer)
  std::fprintf(stderr, "%s%s %lld/%lld  %s  %s%s%s%s\n", interactive_ ? "\r" : "", label_.c_str(),
               static_cast<long long>(done < 0 ? total_ : done), static_cast<long long>(total_), stats.c_str(),
               format_duration(elapsed()).c_str(), note.empty() ? "" : "  ", note.c_str(), interactive_ ? "\033[K" : "");
  std::fflush(stderr);
}

}  // namespace bitrobust::report
