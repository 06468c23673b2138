// Wall-clock time per named region (kernels, communication waits), off unless enabled, so that
// benchmarks can say where a training step's time goes. Disabled, a region costs one branch.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace tandem {

class Profiler {
 public:
  struct Entry {
    std::string name;
    double seconds;
    int64_t calls;
  };
  void set_enabled(bool enabled) { enabled_ = enabled; }
  bool enabled() const { return enabled_; }
  void add(const char* name, double seconds);
  void reset();
  // Regions by descending total time.
  std::vector<Entry> entries() const;

 private:
  bool enabled_ = false;
  mutable std::mutex mutex_;
  std::map<std::string, std::pair<double, int64_t>> totals_;
};

Profiler& profiler();

class ScopedTimer {
 public:
  explicit ScopedTimer(const char* name) : name_(profiler().enabled() ? name : nullptr) {
    if (name_) start_ = std::chrono::steady_clock::now();
  }
  ~ScopedTimer() {
    if (name_)
      profiler().add(
          name_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
  }
  ScopedTimer(const ScopedTimer&) = delete;
  ScopedTimer& operator=(const ScopedTimer&) = delete;

 private:
  const char* name_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace tandem

#define TANDEM_PROFILE_CONCAT_(a, b) a##b
#define TANDEM_PROFILE_CONCAT(a, b) TANDEM_PROFILE_CONCAT_(a, b)
#define TANDEM_PROFILE_SCOPE(name) \
  ::tandem::ScopedTimer TANDEM_PROFILE_CONCAT(tandem_profile_scope_, __LINE__)(name)
