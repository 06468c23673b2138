// StragglerDetector: per-step ratios to the other ranks' median compute, a window's median of
// them per rank, and hysteresis between naming and clearing.
#include "runtime/train/straggler_detector.h"

#include <algorithm>

#include "runtime/core/errors.h"

namespace tandem {

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  const size_t middle = values.size() / 2;
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(middle),
                   values.end());
  const double upper = values[middle];
  if (values.size() % 2 == 1) return upper;
  const double lower =
      *std::max_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(middle));
  return (lower + upper) / 2;
}

StragglerDetector::StragglerDetector(int world_size, double ratio, int64_t window)
    : ratio_(ratio),
      window_(window),
      ratios_(static_cast<size_t>(world_size)),
      history_(static_cast<size_t>(world_size)),
      verdicts_(static_cast<size_t>(world_size)) {
  TANDEM_CHECK(world_size >= 1 && ratio > 1 && window >= 1, "StragglerDetector(", world_size, ", ",
               ratio, ", ", window, ")");
}

std::vector<StragglerChange> StragglerDetector::observe(const std::vector<RankStepTimes>& times) {
  TANDEM_CHECK(times.size() == verdicts_.size(), "step times of ", times.size(), " ranks for ",
               verdicts_.size());
  std::vector<StragglerChange> changes;
  const size_t world = times.size();
  if (world < 2) return changes;  // nobody to be slower than
  std::vector<double> others;
  others.reserve(world - 1);
  for (size_t r = 0; r < world; ++r) {
    others.clear();
    for (size_t q = 0; q < world; ++q)
      if (q != r) others.push_back(times[q].compute);
    const double reference = median(others);
    const double ratio = reference > 0 ? times[r].compute / reference : 1.0;
    auto& ratios = ratios_[r];
    auto& history = history_[r];
    ratios.push_back(ratio);
    history.push_back(times[r]);
    if (static_cast<int64_t>(ratios.size()) > window_) ratios.pop_front(), history.pop_front();
    StragglerVerdict& verdict = verdicts_[r];
    verdict.ratio = median(std::vector<double>(ratios.begin(), ratios.end()));
    verdict.score = verdict.ratio > 1 ? 1 / verdict.ratio : 1.0;
    const bool full = static_cast<int64_t>(ratios.size()) == window_;
    const bool named =
        verdict.straggler ? verdict.ratio >= clear_ratio() : full && verdict.ratio >= ratio_;
    if (named == verdict.straggler) continue;
    verdict.straggler = named;
    StragglerChange change{static_cast<int>(r), named, verdict, {}};
    for (const RankStepTimes& t : history) {
      change.mean.compute += t.compute / static_cast<double>(history.size());
      change.mean.all_to_all_wait += t.all_to_all_wait / static_cast<double>(history.size());
      change.mean.pipeline_wait += t.pipeline_wait / static_cast<double>(history.size());
      change.mean.sync_wait += t.sync_wait / static_cast<double>(history.size());
    }
    changes.push_back(change);
  }
  return changes;
}

}  // namespace tandem
