// The CUDA side of kernels/elementwise.h on fp32 device tensors, on the device's compute stream:
// axpy and scale as the CPU reference computes them, the sum of squares accumulated in double
// (in another order than the CPU's).
#pragma once

#include "runtime/core/tensor.h"

namespace tandem::kernels::cuda {

void axpy(double alpha, const Tensor& x, Tensor& y);
void scale(Tensor& x, double alpha);
double sum_of_squares(const Tensor& x);

}  // namespace tandem::kernels::cuda
