// The startup sgemm that tandem_peak_flops reports.
#include "monitoring/peak_flops.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "runtime/core/errors.h"

namespace tandem::monitoring {

double measure_sgemm_peak_flops(int n, int repeats) {
  TANDEM_CHECK(n > 0 && repeats > 0, "sgemm of ", n, " repeated ", repeats, " times");
  const size_t elements = static_cast<size_t>(n) * static_cast<size_t>(n);
  // Values that stay finite and are not denormal: a GEMM's speed must not depend on them.
  std::vector<float> a(elements, 0.5f), b(elements, 0.25f), c(elements, 0.0f);
  const auto gemm = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
  };
  gemm();  // warm-up: OpenBLAS's buffers, the thread pool, page faults of c
  double best_seconds = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    gemm();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best_seconds = r == 0 ? seconds : std::min(best_seconds, seconds);
  }
  const double flops =
      2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n);
  return best_seconds > 0 ? flops / best_seconds : 0;
}

}  // namespace tandem::monitoring
