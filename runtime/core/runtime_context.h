// The process-wide runtime context: who this process is in the job and how many threads it uses.
// It is the only global mutable state in the library; everything else is passed explicitly.
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include <cstdint>

#include "runtime/core/profiler.h"

namespace tandem {

struct RuntimeContext {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_size = 1;
  int threads = 1;  // CPU kernel threads (one OpenMP pool, shared with OpenBLAS)
  // Every rank's host, by world rank, once a job bootstrapped through the store has joined
  // (empty otherwise): messages about a lost peer name where it was.
  std::vector<std::string> hosts;
  Profiler profiler;
  // A job runs in this process (runtime/train/job.h): one at a time, as they share all of this.
  std::atomic<bool> job_running{false};
};

RuntimeContext& runtime();

// Cores this process may run on (its affinity mask), divided by the ranks sharing this node
// (comm::detect_launch().local_size, which reads every launcher's way of saying it), at least 1.
int default_thread_count(int ranks_on_node);

// Sets the CPU thread pool size for our kernels and for OpenBLAS together.
void set_thread_count(int threads);

}  // namespace tandem
