// AdamW, clipping coefficient and learning-rate schedule.
#include "kernels/optimizer.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "kernels/cpu/dispatch.h"
#ifdef TANDEM_HAVE_CUDA
#include "kernels/cuda/optimizer.h"
#endif
#include "runtime/core/profiler.h"

namespace tandem::kernels {

void adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWHyper& h) {
  TANDEM_PROFILE_SCOPE("adamw_update");
  check_shape(grad, param.shape(), "adamw gradient");
  check_shape(m, param.shape(), "adamw first moment");
  check_shape(v, param.shape(), "adamw second moment");
  check_same_dtype({&param, &grad, &m, &v}, "adamw_update");
  TANDEM_CHECK(h.step >= 1, "adamw step is 1-based, got ", h.step);
#ifdef TANDEM_HAVE_CUDA
  if (device_of({&param, &grad, &m, &v}, "adamw_update").type == DeviceType::kCUDA)
    return cuda::adamw_update(param, grad, m, v, h);
#endif
  require_cpu({&param, &grad, &m, &v}, "adamw_update");
  dispatch_float(param.dtype(), [&](auto zero) {
    using T = decltype(zero);
    T* p = param.data<T>();
    const T* g = grad.data<T>();
    T* ms = m.data<T>();
    T* vs = v.data<T>();
    const T b1 = T(h.beta1), b2 = T(h.beta2), eps = T(h.eps);
    const T lr = T(h.lr), decay = T(1 - h.lr * h.weight_decay);
    const T c1 = T(1 / (1 - std::pow(h.beta1, h.step)));
    const T c2 = T(1 / (1 - std::pow(h.beta2, h.step)));
    const int64_t n = param.numel();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      ms[i] = b1 * ms[i] + (T(1) - b1) * g[i];
      vs[i] = b2 * vs[i] + (T(1) - b2) * g[i] * g[i];
      p[i] = p[i] * decay - lr * (ms[i] * c1) / (std::sqrt(vs[i] * c2) + eps);
    }
  });
}

double clip_coefficient(double global_norm, double max_norm) {
  if (max_norm <= 0 || global_norm <= max_norm) return 1.0;
  return max_norm / (global_norm + 1e-6);
}

double learning_rate_at(int64_t step, int64_t total_steps, int64_t warmup_steps, double lr,
                        double min_lr) {
  if (step < warmup_steps) return lr * static_cast<double>(step + 1) / warmup_steps;
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / decay_steps);
  return min_lr + 0.5 * (lr - min_lr) * (1 + std::cos(std::numbers::pi * progress));
}

}  // namespace tandem::kernels
