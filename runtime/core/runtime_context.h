// The process-wide runtime context: who this process is in the job and how many threads it uses.
// It is the only global mutable state in the library; everything else is passed explicitly.
#pragma once

#include <cstdint>

#include "runtime/core/profiler.h"

namespace tandem {

struct RuntimeContext {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_size = 1;
  int threads = 1;  // CPU kernel threads (one OpenMP pool, shared with OpenBLAS)
  Profiler profiler;
};

RuntimeContext& runtime();

// Number of ranks sharing this node, read from whichever launcher started the process
// (Open MPI, slurm, torchrun); 1 when started by hand.
int local_ranks_from_environment();

// Cores this process may run on (its affinity mask), divided by the ranks on this node, at least 1.
int default_thread_count();

// Sets the CPU thread pool size for our kernels and for OpenBLAS together.
void set_thread_count(int threads);

}  // namespace tandem
