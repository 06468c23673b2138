// Optimizer math: AdamW with decoupled weight decay and bias correction, global-norm clipping,
// and the warmup + cosine learning-rate schedule.
#pragma once

#include <cstdint>

#include "runtime/core/tensor.h"

namespace tandem::kernels {

struct AdamWHyper {
  double lr;
  double beta1;
  double beta2;
  double eps;
  double weight_decay;  // applied as p -= lr·wd·p, independent of the gradient (decoupled)
  int64_t step;         // 1-based, for bias correction
};

// One AdamW update of param in place from grad, updating the moments m and v.
void adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWHyper& h);

// Factor to multiply every gradient by so that the global norm is at most max_norm (1 if it is
// already, or if max_norm is 0 = clipping off).
double clip_coefficient(double global_norm, double max_norm);

// Warmup (linear from lr/warmup to lr over warmup_steps), then cosine from lr to min_lr at
// total_steps. step is 0-based.
double learning_rate_at(int64_t step, int64_t total_steps, int64_t warmup_steps, double lr,
                        double min_lr);

}  // namespace tandem::kernels
