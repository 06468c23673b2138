// Accumulation of profiled regions.
#include "runtime/core/profiler.h"

#include <algorithm>

#include "runtime/core/runtime_context.h"

namespace tandem {

Profiler& profiler() {
  return runtime().profiler;
}

void Profiler::add(const char* name, double seconds) {
  std::lock_guard lock(mutex_);
  auto& slot = totals_[name];
  slot.first += seconds;
  slot.second += 1;
}

void Profiler::reset() {
  std::lock_guard lock(mutex_);
  totals_.clear();
}

std::vector<Profiler::Entry> Profiler::entries() const {
  std::lock_guard lock(mutex_);
  std::vector<Entry> out;
  for (const auto& [name, total] : totals_) out.push_back({name, total.first, total.second});
  std::sort(out.begin(), out.end(),
            [](const Entry& a, const Entry& b) { return a.seconds > b.seconds; });
  return out;
}

}  // namespace tandem
