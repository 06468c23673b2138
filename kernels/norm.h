// RMSNorm: y = x / sqrt(mean(x²) + eps) * g, with split input and weight gradients.
#pragma once

#include "runtime/core/tensor.h"

namespace tandem::kernels {

// x, y [N, d]; g [d]; rstd [N] receives 1/sqrt(mean(x²)+eps) for the backward passes.
void rmsnorm_forward(const Tensor& x, const Tensor& g, double eps, Tensor& y, Tensor& rstd);
// dx = rstd·(g⊙dy) − x·rstd³·Σ(g⊙dy⊙x)/d.
void rmsnorm_dgrad(const Tensor& dy, const Tensor& x, const Tensor& g, const Tensor& rstd,
                   Tensor& dx);
// dg += Σ_n dy ⊙ x · rstd.
void rmsnorm_wgrad(const Tensor& dy, const Tensor& x, const Tensor& rstd, Tensor& dg);

}  // namespace tandem::kernels
