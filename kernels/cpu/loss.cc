// Softmax cross-entropy with its gradient in one pass over the logits.
#include "kernels/loss.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/dispatch.h"
#ifdef TANDEM_HAVE_CUDA
#include "kernels/cuda/loss.h"
#endif
#include "runtime/core/profiler.h"

namespace tandem::kernels {

double cross_entropy(const Tensor& logits, const Tensor& targets, double grad_scale,
                     Tensor* dlogits) {
  TANDEM_PROFILE_SCOPE("cross_entropy");
  const int64_t n = logits.dim(0), v = logits.dim(1);
  check_dtype(targets, DType::kI32, "cross-entropy targets");
  TANDEM_CHECK(targets.numel() == n, "cross-entropy: ", targets.numel(), " targets for ", n,
               " rows");
  if (dlogits) {
    check_shape(*dlogits, logits.shape(), "cross-entropy logit gradient");
    check_same_dtype({&logits, dlogits}, "cross_entropy");
  }
  if (dlogits) device_of({&logits, dlogits}, "cross_entropy");
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&logits, &targets}, "cross_entropy").type == DeviceType::kCUDA)
    return cuda::cross_entropy(logits, targets, grad_scale, dlogits);
#endif
  require_cpu({&logits, &targets}, "cross_entropy");
  const int32_t* tg = targets.data<int32_t>();
  for (int64_t i = 0; i < n; ++i)
    TANDEM_CHECK(tg[i] >= 0 && tg[i] < v, "target ", tg[i], " at row ", i,
                 " is outside the vocabulary [0, ", v, ")");
  double total = 0;
  dispatch_float(logits.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* z = logits.data<T>();
    T* dz = dlogits ? dlogits->data<T>() : nullptr;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (int64_t i = 0; i < n; ++i) {
      const T* zi = z + i * v;
      const T max_logit = *std::max_element(zi, zi + v);
      T sum = 0;
      for (int64_t c = 0; c < v; ++c) sum += std::exp(zi[c] - max_logit);
      const T log_sum = std::log(sum) + max_logit;
      total += static_cast<double>(log_sum - zi[tg[i]]);
      if (dz) {
        T* di = dz + i * v;
        const T s = static_cast<T>(grad_scale);
        for (int64_t c = 0; c < v; ++c) di[c] = std::exp(zi[c] - log_sum) * s;
        di[tg[i]] -= s;
      }
    }
  });
  return total;
}

}  // namespace tandem::kernels
