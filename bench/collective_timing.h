// How the communication benchmarks time one operation on every rank: best of a few trials after a
// warm-up, all ranks starting together (a barrier), the slowest rank's time counting.
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>

#include "comm/communicator.h"

namespace tandem::bench {

inline double best_time_s(comm::Communicator& world, const std::function<void()>& body,
                          int trials = 5) {
  double best = 1e30;
  body();  // warm-up
  for (int t = 0; t < trials; ++t) {
    world.barrier().wait();
    const auto start = std::chrono::steady_clock::now();
    body();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::min(best, comm::all_reduce_value(world, seconds, comm::ReduceOp::kMax));
  }
  return best;
}

}  // namespace tandem::bench
