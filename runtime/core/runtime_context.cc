// Process-wide runtime context and CPU thread-pool sizing.
#include "runtime/core/runtime_context.h"

#include <omp.h>
#include <sched.h>

#include <cstdlib>
#include <string>

#include "runtime/core/errors.h"

extern "C" void openblas_set_num_threads(int num_threads);

namespace tandem {

RuntimeContext& runtime() {
  static RuntimeContext context;
  return context;
}

int local_ranks_from_environment() {
  for (const char* name :
       {"OMPI_COMM_WORLD_LOCAL_SIZE", "LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"}) {
    if (const char* value = std::getenv(name)) {
      char* end = nullptr;
      long n = std::strtol(value, &end, 10);
      TANDEM_USER_CHECK(end != value && *end == '\0' && n > 0, "environment variable ", name, "='",
                        value, "' is not a positive integer; unset it or fix the launcher");
      return static_cast<int>(n);
    }
  }
  return 1;
}

int default_thread_count() {
  cpu_set_t set;
  CPU_ZERO(&set);
  int cores = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
  int per_rank = cores / local_ranks_from_environment();
  return per_rank > 0 ? per_rank : 1;
}

void set_thread_count(int threads) {
  TANDEM_USER_CHECK(threads > 0, "thread count must be positive, got ", threads);
  runtime().threads = threads;
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
}

}  // namespace tandem
