// The CUDA side of kernels/linear.h: fp32 GEMMs on cuBLASLt (fp32 compute), on the device's
// compute stream, for fp32 device tensors whose shapes the CPU entries have checked.
#pragma once

#include "runtime/core/tensor.h"

namespace tandem::kernels::cuda {

void linear_forward(const Tensor& x, const Tensor& w, Tensor& y, bool accumulate);
void linear_dgrad(const Tensor& dy, const Tensor& w, Tensor& dx, bool accumulate);
void linear_wgrad(const Tensor& dy, const Tensor& x, Tensor& dw);

}  // namespace tandem::kernels::cuda
