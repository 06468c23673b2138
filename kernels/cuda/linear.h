// The CUDA side of kernels/linear.h: GEMMs on cuBLASLt (fp32 compute and result, fp32 or bf16
// operands), on the device's compute stream, for device tensors the CPU entries have checked.
#pragma once

#include "runtime/core/tensor.h"

namespace tandem::kernels::cuda {

void linear_forward(const Tensor& x, const Tensor& w, Tensor& y, bool accumulate);
void linear_dgrad(const Tensor& dy, const Tensor& w, Tensor& dx, bool accumulate);
void linear_wgrad(const Tensor& dy, const Tensor& x, Tensor& dw);

}  // namespace tandem::kernels::cuda
