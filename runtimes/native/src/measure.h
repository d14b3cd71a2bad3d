// What the runner measures besides outputs: wall-clock latencies and the process's peak memory.
#pragma once

#include <chrono>
#include <optional>
#include <vector>

namespace dcx {

struct LatencySummary {
  double mean, trimmed_mean, p50, p90, min, max;
};

// trimmed_mean drops the fastest and slowest 10 % (floor) of the samples, as ExecuTorch's Android
// benchmark app does for its trimmean; p50 and p90 interpolate linearly between ranks.
std::optional<LatencySummary> summarize(std::vector<double> samples_ms);

// Peak resident set size of this process (VmHWM in /proc/self/status), if the kernel reports it.
std::optional<long> peak_rss_kb();

class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  double ms() const {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

}  // namespace dcx
