// Straggler detection: which rank is persistently slower than the others, from every rank's step
// split into its own compute and its waits on peers (expert all-to-all, pipeline messages,
// gradient and loss reductions). The times arrive on the step boundary's agreement, which the
// step already does, so every rank sees the same numbers and reaches the same verdict.
//
// A rank's ratio in a step is its compute over the median compute of the other ranks (not of all:
// with two ranks the median of all would be their mean, and a rank 1.3x slower would show 1.13).
// A rank is named once the median of its ratios over the last `window` steps reaches `ratio`, and
// cleared once that median falls below halfway back to 1 (hysteresis): one noisy step neither
// names nor clears a rank.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

namespace tandem {

// One rank's training step (the step boundary's own work excluded), in seconds.
struct RankStepTimes {
  double compute = 0;          // the step minus the waits below
  double all_to_all_wait = 0;  // blocked on expert all-to-alls that overlap did not hide
  double pipeline_wait = 0;    // idle or waiting for pipeline messages
  double sync_wait = 0;        // gradient reduction, loss and norm reductions, ZeRO-1 gather
  double total() const { return compute + all_to_all_wait + pipeline_wait + sync_wait; }
};

struct StragglerVerdict {
  bool straggler = false;
  double ratio = 1;  // the window's median of compute / the others' median compute
  double score = 1;  // relative speed in 0..1: min(1, 1 / ratio)
};

// A rank named or cleared by the last observe().
struct StragglerChange {
  int rank = 0;
  bool named = false;  // false: cleared
  StragglerVerdict verdict;
  RankStepTimes mean;  // its mean times over the window
};

class StragglerDetector {
 public:
  // `ratio` > 1 (monitoring.straggler_ratio), `window` >= 1 steps (monitoring.straggler_window).
  StragglerDetector(int world_size, double ratio, int64_t window);

  // One step's times of every rank, in rank order; returns who was named or cleared by it.
  std::vector<StragglerChange> observe(const std::vector<RankStepTimes>& times);
  const StragglerVerdict& verdict(int rank) const { return verdicts_.at(rank); }
  const std::vector<StragglerVerdict>& verdicts() const { return verdicts_; }
  double clear_ratio() const { return 1 + (ratio_ - 1) / 2; }

 private:
  double ratio_;
  int64_t window_;
  std::vector<std::deque<double>> ratios_;          // per rank, the window's ratios
  std::vector<std::deque<RankStepTimes>> history_;  // per rank, the window's times
  std::vector<StragglerVerdict> verdicts_;
};

// The median of `values` (taken by value: it is partially sorted); 0 for none.
double median(std::vector<double> values);

}  // namespace tandem
