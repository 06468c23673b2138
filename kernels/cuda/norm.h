// The CUDA side of kernels/norm.h: RMSNorm forward and its split backward on fp32 tensors in
// device memory, on the device's compute stream. The entries in kernels/norm.h call these for
// CUDA tensors; results match the CPU reference to fp32 rounding (the row sums run in another
// order).
#pragma once

#include "runtime/core/tensor.h"

namespace tandem::kernels::cuda {

void rmsnorm_forward(const Tensor& x, const Tensor& g, double eps, Tensor& y, Tensor& rstd);
void rmsnorm_dgrad(const Tensor& dy, const Tensor& x, const Tensor& g, const Tensor& rstd,
                   Tensor& dx);
void rmsnorm_wgrad(const Tensor& dy, const Tensor& x, const Tensor& rstd, Tensor& dg);

}  // namespace tandem::kernels::cuda
