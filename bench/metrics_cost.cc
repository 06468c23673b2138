// What the metrics cost, measured directly rather than as a difference of noisy step times: the
// training thread's share (RankMetrics::record_step, with /proc/self/statm read, for a model's
// expert series) and one scrape's (collecting and serialising the whole registry, which runs on
// the server's thread), each against a step time given on the command line.
//   metrics_cost [STEP_MS] [MOE_LAYERS] [EXPERTS]   (default: tiny.toml, 110 ms, 3 x 8)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "monitoring/metrics.h"

namespace {

template <class Body>
double seconds_per_call(int calls, Body body) {
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < calls; ++i) body(i);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / calls;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tandem::monitoring;
  const double step_ms = argc > 1 ? std::atof(argv[1]) : 110;
  const int64_t layers = argc > 2 ? std::atoll(argv[2]) : 3;
  const int64_t experts = argc > 3 ? std::atoll(argv[3]) : 8;
  RankMetrics metrics({0, "bench", 0});
  RankPlace place;
  for (int64_t l = 0; l < layers; ++l) place.expert_layers.push_back(l + 1);
  place.experts_per_layer = experts;
  metrics.place(place);
  metrics.set_peak_flops(1e11);
  StepValues step;
  step.tokens = 2048;
  step.seconds = step_ms / 1e3;
  step.expert_tokens.assign(static_cast<size_t>(layers), std::vector<int64_t>(experts, 512));
  size_t bytes = 0;
  for (int round = 0; round < 3; ++round) {  // the best of 3 rounds: the others were disturbed
    static double best_record = 1e9, best_scrape = 1e9;
    const double record = seconds_per_call(20000, [&](int i) {
      step.step = i;
      step.loss = 1.0 / (i + 1);
      metrics.record_step(step);
    });
    const double scrape = seconds_per_call(500, [&](int) { bytes = metrics.exposition().size(); });
    best_record = std::min(best_record, record);
    best_scrape = std::min(best_scrape, scrape);
    if (round < 2) continue;
    std::printf(
        "metrics cost (%lld MoE layers x %lld experts): record_step %.1f us = %.4f%% of a %.0f ms "
        "step (training thread); one scrape (%zu bytes) %.0f us = %.4f%% of one core at one "
        "scrape per second, %.4f%% at Prometheus's default 15 s\n",
        static_cast<long long>(layers), static_cast<long long>(experts), best_record * 1e6,
        100 * best_record / (step_ms / 1e3), step_ms, bytes, best_scrape * 1e6, 100 * best_scrape,
        100 * best_scrape / 15);
  }
  return 0;
}
