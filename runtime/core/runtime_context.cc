// Process-wide runtime context and CPU thread-pool sizing.
#include "runtime/core/runtime_context.h"

#include <omp.h>
#include <sched.h>

#include <algorithm>

#include "runtime/core/errors.h"

extern "C" void openblas_set_num_threads(int num_threads);

namespace tandem {

RuntimeContext& runtime() {
  static RuntimeContext context;
  return context;
}

int default_thread_count(int ranks_on_node) {
  cpu_set_t set;
  CPU_ZERO(&set);
  int cores = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
  int per_rank = cores / std::max(ranks_on_node, 1);
  return per_rank > 0 ? per_rank : 1;
}

void set_thread_count(int threads) {
  TANDEM_USER_CHECK(threads > 0, "thread count must be positive, got ", threads);
  runtime().threads = threads;
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
}

}  // namespace tandem
